import fcntl
from pathlib import Path

import pytest

from images.library import CURRENT, ImageLibrary, StoreError


def test_publish_get_list(tmp_path: Path, monkeypatch, fake_build, fake_hash):
    monkeypatch.chdir(tmp_path)
    store = ImageLibrary(Path("store"))  # a relative root: paths handed out are still absolute
    assert store.list() == []
    assert store.get("img") is None

    h = fake_hash("one")
    with store.lock("img"), store.staging("img") as staging:
        assert staging.parent == tmp_path / "store" / ".staging"
        manifest = fake_build(staging, "img", h)
        image = store.publish(staging)
    assert not staging.exists()

    build_dir = tmp_path / "store" / "img" / h.split(":")[1][:12]
    assert image.path == build_dir
    assert (tmp_path / "store" / "img" / CURRENT).is_symlink()
    assert (tmp_path / "store" / "img" / CURRENT).resolve() == build_dir
    assert store.get("img").manifest == manifest
    assert [i.name for i in store.list()] == ["img"]
    assert image.artifact_path("disk") == build_dir / "disk.qcow2"

    data = image.to_dict()
    assert data["name"] == "img" and data["recipe_hash"] == h
    assert data["path"] == str(build_dir)
    assert set(data["artifacts"]) == {"disk", "kernel", "initrd", "packages"}
    for art in data["artifacts"].values():
        path = Path(art["path"])
        assert path.is_absolute() and path.is_file()
        assert path.stat().st_size == art["size"]


def test_list_is_sorted_and_skips_junk(tmp_path: Path, publish_fake):
    store = ImageLibrary(tmp_path)
    publish_fake(store, "zeta")
    publish_fake(store, "alpha")
    (tmp_path / "not-an-image").mkdir()
    (tmp_path / "stray-file").write_text("")
    assert [i.name for i in store.list()] == ["alpha", "zeta"]


def test_second_build_replaces_first(tmp_path: Path, publish_fake, fake_hash):
    store = ImageLibrary(tmp_path)
    first = publish_fake(store, "img", fake_hash("one"))
    second = publish_fake(store, "img", fake_hash("two"))
    assert first.path != second.path
    assert not first.path.exists()
    assert (tmp_path / "img" / CURRENT).resolve() == second.path
    assert store.get("img").manifest.recipe_hash == fake_hash("two")
    assert sorted(p.name for p in (tmp_path / "img").iterdir()) == sorted([CURRENT, second.path.name])


def test_publish_refuses_incomplete_build(tmp_path: Path, publish_fake, fake_build, fake_hash):
    store = ImageLibrary(tmp_path)
    good = publish_fake(store, "img", fake_hash("good"))
    before = [i.to_dict() for i in store.list()]

    with store.lock("img"), store.staging("img") as staging:
        fake_build(staging, "img", fake_hash("bad"))
        (staging / "vmlinuz").write_bytes(b"tampered after checksumming")
        with pytest.raises(StoreError, match="kernel"):
            store.publish(staging)
    with store.lock("new"), store.staging("new") as staging:
        fake_build(staging, "new")
        (staging / "initrd.img").unlink()
        with pytest.raises(StoreError, match="initrd"):
            store.publish(staging)

    assert [i.to_dict() for i in store.list()] == before
    assert good.path.is_dir()
    assert not (tmp_path / "new").exists()
    assert list((tmp_path / ".staging").iterdir()) == []


def test_staging_removed_when_block_raises(tmp_path: Path):
    store = ImageLibrary(tmp_path)
    with pytest.raises(RuntimeError, match="build failed"), store.lock("img"), store.staging("img") as staging:
        (staging / "sub").mkdir()
        (staging / "sub" / "file").write_text("half a build")
        raise RuntimeError("build failed")
    assert not staging.exists()
    assert list((tmp_path / ".staging").iterdir()) == []
    assert store.list() == []


def test_abandoned_staging_removed_on_open(tmp_path: Path):
    ImageLibrary(tmp_path)
    abandoned = tmp_path / ".staging" / "img+xyz123"
    (abandoned / "deep").mkdir(parents=True)
    (abandoned / "deep" / "disk.qcow2").write_bytes(b"partial")
    ImageLibrary(tmp_path)
    assert not abandoned.exists()


@pytest.mark.parametrize("name", ["img", "img.v2"])
def test_staging_of_a_running_build_is_kept(tmp_path: Path, name: str):
    ImageLibrary(tmp_path)
    in_progress = tmp_path / ".staging" / f"{name}+abc456"
    in_progress.mkdir()
    with open(tmp_path / ".locks" / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another open file description: another "process"
        ImageLibrary(tmp_path)
        assert in_progress.is_dir()
    ImageLibrary(tmp_path)
    assert not in_progress.exists()


def test_remove(tmp_path: Path, publish_fake):
    store = ImageLibrary(tmp_path)
    publish_fake(store, "img")
    publish_fake(store, "other")
    assert store.remove("nope") is False
    for bad in (".staging", ".locks", "a/b", "img/current", ".."):
        assert store.remove(bad) is False
    assert (tmp_path / ".staging").is_dir() and (tmp_path / ".locks").is_dir()

    assert store.remove("img") is True
    assert not (tmp_path / "img").exists()
    assert store.get("img") is None
    assert [i.name for i in store.list()] == ["other"]
    assert list((tmp_path / ".staging").iterdir()) == []
    assert store.remove("img") is False


def test_remove_empty_name(tmp_path: Path):
    assert ImageLibrary(tmp_path).remove("") is False

