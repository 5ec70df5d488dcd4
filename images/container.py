"""The container image preloaded into guests, made from Debian packages with no registry.

mmdebstrap extracts the recipe's packages (``busybox-static`` by default) into a directory;
this module writes that tree as a one-layer ``docker-archive`` (the format of
``docker save``), which both ``podman load`` and ``docker load`` read. Timestamps and
ownership are fixed, so the same packages always give the same image id.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

from .manifest import sha256_file

EPOCH = "1970-01-01T00:00:00Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def finish_rootfs(rootfs: Path, run: Callable[[list[str]], None]) -> None:
    """A runnable busybox tree: applet links, the users every runtime expects, empty dirs."""
    busybox = next((p for p in ("bin/busybox", "usr/bin/busybox") if (rootfs / p).is_file()), None)
    if busybox is None:
        raise ValueError("the container image has no busybox binary (is busybox-static in its packages?)")
    run(["chroot", str(rootfs), "/" + busybox, "--install", "-s"])
    for d in ("tmp", "var/tmp"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
        os.chmod(rootfs / d, 0o1777)
    for d in ("proc", "sys", "dev", "etc", "root", "run"):
        (rootfs / d).mkdir(exist_ok=True)
    # Everything a runtime mounts over or links at exists already: rootless Podman reads the
    # preloaded store, where this tree is owned by the host's root, so a rootless container
    # cannot create these itself.
    for f in ("etc/hosts", "etc/hostname", "etc/resolv.conf", "run/.containerenv"):
        (rootfs / f).touch()
    (rootfs / "etc/mtab").unlink(missing_ok=True)
    (rootfs / "etc/mtab").symlink_to("/proc/mounts")
    (rootfs / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (rootfs / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    for junk in ("var/lib/dpkg", "var/cache/apt", "var/lib/apt", "etc/apt", "var/log"):
        shutil.rmtree(rootfs / junk, ignore_errors=True)


def layer_tar(rootfs: Path, dest: Path) -> str:
    """Write ROOTFS as a reproducible tar; return its sha256 (the layer's diff id)."""
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in _walk(rootfs):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(rootfs)))
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if info.isreg():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return sha256_file(dest)


def _walk(root: Path):
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here != root:
            yield here
        # os.walk lists a symlink to a directory among the directories and does not enter
        # it: it belongs in the layer as the symlink it is.
        links = [d for d in dirnames if (here / d).is_symlink()]
        dirnames[:] = sorted(d for d in dirnames if d not in links)
        for name in sorted(filenames + links):
            yield here / name


def write_archive(rootfs: Path, reference: str, command: list[str], dest: Path, created_by: str) -> str:
    """Write a docker-archive of ROOTFS tagged REFERENCE at DEST; return the image id."""
    layer = dest.with_suffix(".layer.tar")
    diff_id = layer_tar(rootfs, layer)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": EPOCH,
        "config": {"Env": [PATH_ENV], "Cmd": command, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created": EPOCH, "created_by": created_by}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    image_id = hashlib.sha256(config_bytes).hexdigest()
    manifest = [{"Config": f"{image_id}.json", "RepoTags": [reference], "Layers": [f"{diff_id}/layer.tar"]}]
    try:
        with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, f"{image_id}.json", config_bytes)
            info = tar.gettarinfo(str(layer), arcname=f"{diff_id}/layer.tar")
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
            with layer.open("rb") as f:
                tar.addfile(info, f)
            _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
    finally:
        layer.unlink(missing_ok=True)
    return image_id


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))

