import json
import os
import stat
from pathlib import Path

import yaml

from images import customize
from images.customize import cloud_config, share_store, user_groups

PLAN = {"boot": "fast", "engine": "podman", "default_user": "debian"}


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_cloud_config():
    text = cloud_config(PLAN, ["adm", "sudo"])
    cfg = yaml.safe_load(text)
    assert cfg == json.loads(text.split("\n", 1)[1])  # a comment line, then JSON
    assert cfg["datasource_list"] == ["NoCloud", "None"]
    user = cfg["system_info"]["default_user"]
    assert user["name"] == "debian"
    assert user["lock_passwd"] is True
    assert user["groups"] == ["adm", "sudo"]
    assert "ssh_pwauth" not in cfg and cfg["disable_root"] is True


def test_user_groups(tmp_path: Path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "group").write_text("root:x:0:\nadm:x:4:\nsudo:x:27:\ndocker:x:999:\n")
    assert user_groups(tmp_path, "podman") == ["adm", "sudo"]
    assert user_groups(tmp_path, "docker") == ["adm", "sudo", "docker"]


def make(path: Path, m: int, content: str | None = None) -> Path:
    if content is None:
        path.mkdir(parents=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    os.chmod(path, m)
    return path


def test_share_store(tmp_path: Path):
    store = make(tmp_path / "storage", 0o700)
    layer = make(store / "overlay" / "0123abcd", 0o700)
    diff = make(layer / "diff", 0o700)
    secret = make(diff / "etc" / "shadow", 0o600, "root:*:")
    os.chmod(diff / "etc", 0o700)
    link = make(layer / "link", 0o600, "SHORTID")
    make(store / "overlay" / "l", 0o700)
    (store / "overlay" / "l" / "SHORTID").symlink_to("../0123abcd/diff")
    images_json = make(store / "overlay-images" / "images.json", 0o600, "[]")
    layers_json = make(store / "overlay-layers" / "layers.json", 0o600, "[]")
    lock = make(store / "storage.lock", 0o600, "")
    make(store / "libpod" / "bolt_state.db", 0o600, "state")
    for d in (store / "overlay", store / "overlay-images", store / "overlay-layers"):
        os.chmod(d, 0o700)

    share_store(store)

    assert not (store / "libpod").exists()
    for d in (store, store / "overlay", layer, store / "overlay" / "l",
              store / "overlay-images", store / "overlay-layers"):
        assert mode(d) == 0o755, d
    for f in (link, images_json, layers_json, lock):
        assert mode(f) == 0o644, f
    # layer contents keep the modes the image gave them
    assert mode(secret) == 0o600
    assert mode(diff / "etc") == 0o700
    assert (store / "overlay" / "l" / "SHORTID").is_symlink()


def test_copy_tree_keeps_modes_and_maps_dot_names(tmp_path):
    src, rootfs = tmp_path / "src", tmp_path / "rootfs"
    (src / "etc/skel/dot-config/app").mkdir(parents=True)
    (src / "etc/skel/dot-config/app/app.conf").write_text("x = 1\n")
    (src / "usr/lib/tool").parent.mkdir(parents=True)
    (src / "usr/lib/tool").write_text("#!/bin/sh\n")
    (src / "usr/lib/tool").chmod(0o755)
    customize.copy_tree(src, rootfs)
    assert (rootfs / "etc/skel/.config/app/app.conf").read_text() == "x = 1\n"
    assert not (rootfs / "etc/skel/dot-config").exists()
    assert (rootfs / "usr/lib/tool").stat().st_mode & 0o777 == 0o755
