import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from computed.cli import cli
from images.builder import Builder
from images.library import ImageLibrary


@pytest.fixture
def run(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(Builder, "build", lambda *a, **kw: pytest.fail("the CLI started a build"))
    env = {"COMPUTED_VAR_DIR": str(tmp_path), "COMPUTED_CONFIG": None, "COMPUTED_IMAGE_STORE": None,
           "COMPUTED_IMAGE_CACHE": None, "COMPUTED_DEFAULT_IMAGE": None, "COLUMNS": "200"}

    def invoke(*args: str):
        return CliRunner(env=env).invoke(cli, list(args), catch_exceptions=False)

    return invoke


@pytest.fixture
def store(tmp_path: Path) -> ImageLibrary:
    return ImageLibrary(tmp_path / "images")


def test_list_empty(run, tmp_path: Path):
    result = run("image", "list")
    assert result.exit_code == 0
    assert "no images in" in result.stderr and str(tmp_path / "images") in result.stderr
    assert "computed image build --default" in result.stderr
    assert result.stdout == ""


def test_list_json_empty(run):
    result = run("image", "list", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == []


def test_list_published_image(run, store, publish_fake):
    image = publish_fake(store, "testimg")
    result = run("image", "list", "--json")
    assert result.exit_code == 0
    [listed] = json.loads(result.stdout)
    assert listed["name"] == "testimg"
    assert listed["recipe_hash"] == image.manifest.recipe_hash
    assert listed["path"] == str(image.path)
    for role, art in listed["artifacts"].items():
        assert Path(art["path"]).is_absolute() and Path(art["path"]).is_file()
        assert art["sha256"] == image.manifest.artifacts[role]["sha256"]

    table = run("image", "list")
    assert table.exit_code == 0
    assert "testimg" in table.stdout and "6.1.0-test-cloud-amd64" in table.stdout


def test_rm(run, store, publish_fake):
    image = publish_fake(store, "testimg")
    result = run("image", "rm", "testimg")
    assert result.exit_code == 0 and "removed testimg" in result.stderr
    assert not image.path.exists()
    assert json.loads(run("image", "list", "--json").stdout) == []


def test_rm_unknown(run):
    result = run("image", "rm", "nope")
    assert result.exit_code == 1
    assert "no image named 'nope'" in result.stderr


def test_build_unknown_recipe(run):
    result = run("image", "build", "nosuch")
    assert result.exit_code == 1
    assert "nosuch" in result.stderr
    assert "debian-12-docker" in result.stderr and "debian-12-podman" in result.stderr


@pytest.mark.parametrize("args", [[], ["debian-12-podman", "--default"]])
def test_build_needs_exactly_one_of_name_and_default(run, args):
    result = run("image", "build", *args)
    assert result.exit_code == 2
    assert "give an image NAME or --default" in result.stderr


def test_bad_config_is_reported(run, tmp_path: Path):
    (tmp_path / "computed.toml").write_text("[images]\nstore = 3\n")
    result = run("image", "list")
    assert result.exit_code == 1
    assert "store must be a string" in result.stderr


def test_verify(run, store, publish_fake):
    image = publish_fake(store, "testimg")
    good = run("image", "verify", "testimg")
    assert good.exit_code == 0 and "files match the manifest" in good.stderr
    kernel = image.artifact_path("kernel")
    kernel.write_bytes(b"X" * kernel.stat().st_size)  # same size, other content
    bad = run("image", "verify", "testimg")
    assert bad.exit_code == 1
    assert "testimg is damaged" in bad.stderr and "kernel" in bad.stderr and "sha256" in bad.stderr
    assert run("image", "verify", "nope").exit_code == 1
