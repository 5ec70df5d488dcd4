import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from images.container import write_archive

REF = "computed/test:latest"
CMD = ["/bin/tool", "--flag"]


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "etc" / "empty").mkdir(parents=True)
    (root / "etc" / "hello").write_text("hello\n")
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho tool\n")
    os.chmod(root / "bin" / "tool", 0o755)
    (root / "bin" / "sh").symlink_to("tool")
    return root


def archive(rootfs: Path, dest: Path) -> tuple[str, dict]:
    image_id = write_archive(rootfs, REF, CMD, dest, created_by="unit test")
    with tarfile.open(dest) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    return image_id, members


def layer_members(layer: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_docker_archive_layout(rootfs: Path, tmp_path: Path):
    dest = tmp_path / "image.tar"
    image_id, members = archive(rootfs, dest)

    [manifest] = json.loads(members["manifest.json"])
    assert manifest["RepoTags"] == [REF]
    assert manifest["Config"] == f"{image_id}.json"
    [layer_name] = manifest["Layers"]
    assert set(members) == {"manifest.json", manifest["Config"], layer_name}

    config_bytes = members[manifest["Config"]]
    assert hashlib.sha256(config_bytes).hexdigest() == image_id
    config = json.loads(config_bytes)
    layer = members[layer_name]
    assert config["rootfs"] == {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}
    assert layer_name == hashlib.sha256(layer).hexdigest() + "/layer.tar"
    assert config["config"]["Cmd"] == CMD
    assert config["os"] == "linux" and config["architecture"] == "amd64"
    assert config["history"][0]["created_by"] == "unit test"
    assert not dest.with_suffix(".layer.tar").exists()


def test_layer_entries(rootfs: Path, tmp_path: Path):
    _, members = archive(rootfs, tmp_path / "image.tar")
    [layer_name] = [n for n in members if n.endswith("/layer.tar")]
    entries = layer_members(members[layer_name])
    assert sorted(entries) == ["bin", "bin/sh", "bin/tool", "etc", "etc/empty", "etc/hello"]
    for info in entries.values():
        assert (info.uid, info.gid, info.mtime) == (0, 0, 0)
        assert (info.uname, info.gname) == ("root", "root")
    assert entries["bin/sh"].issym() and entries["bin/sh"].linkname == "tool"
    assert entries["bin/tool"].isreg() and entries["bin/tool"].mode & 0o111
    assert entries["etc/empty"].isdir()
    with tarfile.open(fileobj=io.BytesIO(members[layer_name])) as tar:
        assert tar.extractfile("etc/hello").read() == b"hello\n"


def test_reproducible(rootfs: Path, tmp_path: Path):
    first, _ = archive(rootfs, tmp_path / "a.tar")
    again, _ = archive(rootfs, tmp_path / "b.tar")
    for path in rootfs.rglob("*"):
        os.utime(path, (1_000_000_000, 1_000_000_000), follow_symlinks=False)
    touched, _ = archive(rootfs, tmp_path / "c.tar")
    assert first == again == touched
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "c.tar").read_bytes()

    (rootfs / "etc" / "hello").write_text("changed\n")
    changed, _ = archive(rootfs, tmp_path / "d.tar")
    assert changed != first


def test_layer_is_in_sorted_order(tmp_path: Path):
    root = tmp_path / "rootfs"
    for name in ["zeta", "alpha", "mu", "beta", "omega", "kappa", "delta", "sub/q", "sub/b", "sub/k",
                 "y/1", "e/1", "a-dir/x", "q/1", "c/1"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    _, members = archive(root, tmp_path / "image.tar")
    [layer_name] = [n for n in members if n.endswith("/layer.tar")]
    # each directory's files sorted, then its sub-directories sorted: no file-system order leaks in
    assert list(layer_members(members[layer_name])) == [
        "alpha", "beta", "delta", "kappa", "mu", "omega", "zeta",
        "a-dir", "a-dir/x", "c", "c/1", "e", "e/1", "q", "q/1",
        "sub", "sub/b", "sub/k", "sub/q", "y", "y/1",
    ]


def test_same_tree_made_in_another_order_gives_the_same_image(tmp_path: Path):
    trees = []
    for order in (["a", "b", "c", "d/x", "d/y"], ["d/y", "d/x", "c", "b", "a"]):
        root = tmp_path / f"tree{len(trees)}"
        for name in order:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(name)
        trees.append(root)
    assert archive(trees[0], tmp_path / "a.tar")[0] == archive(trees[1], tmp_path / "b.tar")[0]


def test_symlink_to_directory_is_kept(rootfs: Path, tmp_path: Path):
    (rootfs / "usr").mkdir()
    (rootfs / "usr" / "bin").symlink_to("../bin")  # like merged-/usr's /bin -> usr/bin
    _, members = archive(rootfs, tmp_path / "image.tar")
    [layer_name] = [n for n in members if n.endswith("/layer.tar")]
    entries = layer_members(members[layer_name])
    assert "usr/bin" in entries and entries["usr/bin"].issym()
