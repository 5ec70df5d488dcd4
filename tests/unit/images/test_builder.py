import io
import os
import signal
import time
from pathlib import Path

import pytest
from rich.console import Console

from computed.settings import Settings
from images import recipe as recipes
from images.builder import Builder, BuildError, remove_tree

RECIPE = recipes.find("debian-12-podman")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(var_dir=tmp_path, image_library=tmp_path / "store", image_cache=tmp_path / "cache")


@pytest.fixture
def builder(settings: Settings) -> Builder:
    return Builder(settings, console=Console(file=io.StringIO()))


def leftovers(settings: Settings) -> dict:
    """What a build left in the store and cache (besides logs)."""
    return {
        "staging": sorted(os.listdir(settings.image_library / ".staging")),
        "work": sorted(os.listdir(settings.image_cache / "work")),
        "store": sorted(os.listdir(settings.image_library)),
    }


def test_up_to_date_image_is_not_rebuilt(builder, publish_fake, monkeypatch):
    published = publish_fake(builder.store, RECIPE.name, RECIPE.hash)
    monkeypatch.setattr(Builder, "_build", lambda *a: pytest.fail("_build called for an up-to-date image"))
    result = builder.build(RECIPE)
    assert result.skipped is True
    assert result.image.path == published.path


def test_changed_recipe_is_rebuilt(builder, publish_fake, fake_hash, fake_build, monkeypatch):
    publish_fake(builder.store, RECIPE.name, fake_hash("an older recipe"))
    calls = []

    def fake(self, recipe, work, staging, log):
        calls.append(recipe.name)
        return fake_build(staging, recipe.name, recipe.hash)

    monkeypatch.setattr(Builder, "_build", fake)
    result = builder.build(RECIPE)
    assert calls == [RECIPE.name] and result.skipped is False
    assert builder.store.get(RECIPE.name).manifest.recipe_hash == RECIPE.hash


def test_force_rebuilds_and_publishes(builder, settings, publish_fake, fake_build, monkeypatch):
    publish_fake(builder.store, RECIPE.name, RECIPE.hash)
    abandoned = settings.image_cache / "work" / f"{RECIPE.name}+killed"
    (abandoned / "rootfs").mkdir(parents=True)
    seen = {}

    def fake(self, recipe, work, staging, log):
        seen.update(work=work, staging=staging)
        assert work.is_dir() and staging.is_dir()
        assert not abandoned.exists(), "scratch of a killed build is removed before building"
        return fake_build(staging, recipe.name, recipe.hash, version="2.0.0")

    monkeypatch.setattr(Builder, "_build", fake)
    result = builder.build(RECIPE, force=True)
    assert result.skipped is False
    assert result.image.manifest.version == "2.0.0"
    assert builder.store.get(RECIPE.name).manifest.version == "2.0.0"
    assert not seen["work"].exists() and not seen["staging"].exists()
    assert leftovers(settings) == {"staging": [], "work": [], "store": [".locks", ".staging", RECIPE.name]}


@pytest.mark.parametrize("error, raised", [(RuntimeError("mmdebstrap blew up"), BuildError),
                                           (KeyboardInterrupt(), KeyboardInterrupt)])
def test_failed_build_leaves_nothing_behind(builder, settings, monkeypatch, error, raised):
    sigterm = signal.getsignal(signal.SIGTERM)

    def fake(self, recipe, work, staging, log):
        (staging / "disk.qcow2").write_bytes(b"half a disk")
        (work / "rootfs" / "etc").mkdir(parents=True)
        log.path.write_text("step 1 ok\nstep 2 exploded\n")
        raise error

    monkeypatch.setattr(Builder, "_build", fake)
    with pytest.raises(raised) as e:
        builder.build(RECIPE)

    assert leftovers(settings) == {"staging": [], "work": [], "store": [".locks", ".staging"]}
    assert signal.getsignal(signal.SIGTERM) == sigterm
    [kept] = (settings.image_cache / "logs").iterdir()
    assert kept.name.startswith(RECIPE.name + "-") and kept.suffix == ".log"
    assert "step 2 exploded" in kept.read_text()
    if raised is BuildError:
        assert e.value.log == kept
        assert "mmdebstrap blew up" in str(e.value)
        assert "step 2 exploded" in str(e.value)  # the log's tail is in the message
        assert isinstance(e.value.__cause__, RuntimeError)


def test_sigterm_stops_a_build_like_ctrl_c(builder, settings, monkeypatch):
    received = []

    def fake(self, recipe, work, staging, log):
        (staging / "disk.qcow2").write_bytes(b"half a disk")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
        pytest.fail("SIGTERM did not interrupt the build")

    monkeypatch.setattr(Builder, "_build", fake)
    # If the builder installed no handler of its own, this one would get the signal.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        with pytest.raises(KeyboardInterrupt):
            builder.build(RECIPE)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert received == []
    assert leftovers(settings) == {"staging": [], "work": [], "store": [".locks", ".staging"]}


def test_unpublishable_build_is_a_build_error(builder, settings, fake_build, monkeypatch):
    def fake(self, recipe, work, staging, log):
        manifest = fake_build(staging, recipe.name, recipe.hash)
        (staging / "vmlinuz").write_bytes(b"changed after the manifest was written")
        return manifest

    monkeypatch.setattr(Builder, "_build", fake)
    with pytest.raises(BuildError, match="refusing to publish"):
        builder.build(RECIPE)
    assert leftovers(settings) == {"staging": [], "work": [], "store": [".locks", ".staging"]}


def test_remove_tree(tmp_path: Path):
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "file").write_text("x")
    (tree / "top").write_text("y")
    (tree / "link").symlink_to(tmp_path / "outside")
    (tmp_path / "outside").write_text("must survive")
    remove_tree(tree)
    assert not tree.exists()
    assert (tmp_path / "outside").read_text() == "must survive"


def test_prune_debs_keeps_the_newest_version_of_each_package(builder):
    debs = builder.debs
    old, new, other = debs / "podman_4.3.1-1_amd64.deb", debs / "podman_4.3.1-2_amd64.deb", debs / "crun_1.8_amd64.deb"
    for i, path in enumerate((old, new, other)):
        path.write_bytes(b"deb")
        os.utime(path, (1000 + i, 1000 + i))
    (debs / "partial").mkdir()
    builder._prune_debs()
    assert sorted(p.name for p in debs.glob("*.deb")) == [other.name, new.name]
