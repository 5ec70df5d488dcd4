"""Fake image builds: complete and checksummed, as a real build leaves them, made in a
moment. ``publish_with_disk`` gives one a real (tiny, empty) qcow2 disk, so that launching
on libvirt's test driver can layer an instance disk on it with ``qemu-img``. And nft in
memory for the guest firewall (``FakeNft``)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from images.manifest import Manifest, describe_artifact
from images.library import ImageLibrary, ImageBuild

DEFAULT_IMAGE = "debian-12-podman"


def fake_hash(seed: str) -> str:
    """A recipe hash ("sha256:" + 64 hex digits) derived from SEED."""
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def write_fake_build(directory: Path, name: str = "testimg", recipe_hash: str | None = None,
                     version: str = "1.0.0") -> Manifest:
    """Small artifact files and their manifest in DIRECTORY, as a real build leaves them."""
    recipe_hash = recipe_hash or fake_hash(name)
    files = {
        "disk": ("disk.qcow2", b"QFI\xfb fake disk for " + name.encode()),
        "kernel": ("vmlinuz", b"fake kernel"),
        "initrd": ("initrd.img", b"fake initrd"),
        "packages": ("packages.txt", b"podman\t4.3.1+ds1-8+deb12u1\n"),
    }
    for file, content in files.values():
        (directory / file).write_bytes(content)
    manifest = Manifest(
        name=name, version=version, description="a fake image", recipe_hash=recipe_hash,
        built_at="2024-01-01T00:00:00Z", build_seconds=1.0, suite="bookworm", architecture="amd64",
        boot="fast", kernel_version="6.1.0-test-cloud-amd64", kernel_cmdline="root=/dev/vda",
        default_user="debian",
        container_engine={"name": "podman", "package": "podman", "version": "4.3.1+ds1-8+deb12u1"},
        container_image="computed/busybox:latest", packages_installed=1,
        artifacts={role: describe_artifact(directory / file) for role, (file, _) in files.items()},
    )
    manifest.write(directory)
    return manifest


def publish_with_disk(store: ImageLibrary, name: str = DEFAULT_IMAGE) -> ImageBuild:
    """A fake build of NAME with a real 64 MiB qcow2 disk, published in STORE."""
    with store.lock(name), store.staging(name) as staging:
        manifest = write_fake_build(staging, name)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(staging / "disk.qcow2"), "64M"], check=True)
        manifest.artifacts["disk"] = describe_artifact(staging / "disk.qcow2", virtual_size=64 << 20)
        manifest.write(staging)
        return store.publish(staging)


class FakeNft:
    """nft as far as the guest firewall's tests need it, in memory: it lists the table as it
    was installed (or one object short: LISTS_DIFFERENTLY), or refuses installs (INSTALL_FAILS:
    nft's words)."""

    def __init__(self, install_fails: str | None = None, lists_differently: bool = False):
        self.table: list[dict] | None = None
        self.install_fails = install_fails
        self.lists_differently = lists_differently
        self.installs = 0

    def __call__(self, args, stdin=None):
        if args[:2] == ["-j", "list"]:
            if self.table is None:
                return subprocess.CompletedProcess(args, 1, "", "Error: No such file or directory\n")
            return subprocess.CompletedProcess(args, 0, json.dumps({"nftables": [{"metainfo": {}}, *self.table]}), "")
        if args == ["-j", "-f", "-"]:
            if self.install_fails:
                return subprocess.CompletedProcess(args, 1, "", self.install_fails)
            self.installs += 1
            batch = json.loads(stdin)["nftables"]
            assert [next(iter(c)) for c in batch[:2]] == ["add", "delete"]
            self.table = [c["add"] for c in batch[2:]]
            if self.lists_differently:
                self.table = self.table[:-1]
            return subprocess.CompletedProcess(args, 0, "", "")
        raise AssertionError(args)
