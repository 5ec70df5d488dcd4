import shutil
from pathlib import Path

import pytest

from images import recipe as recipes
from images.recipe import RecipeError

PODMAN = (recipes.RECIPES_DIR / "debian-12-podman.toml").read_text()


def parse_error(text: str) -> str:
    with pytest.raises(RecipeError) as e:
        recipes.parse(text, source="test.toml")
    assert str(e.value).startswith("test.toml: ")
    return str(e.value)


@pytest.mark.parametrize("name", ["debian-12-podman", "debian-12-docker"])
def test_shipped_recipes_load(name):
    recipe = recipes.load(recipes.RECIPES_DIR / f"{name}.toml")
    assert recipe.name == name
    assert recipe.boot == "fast"
    assert recipe.container_engine["package"] in recipe.packages
    assert all(p in recipe.packages for p in recipes.REQUIRED_PACKAGES)
    assert recipes.find(name) == recipe


def test_available_lists_shipped_recipes():
    assert recipes.available() == ["debian-12-docker", "debian-12-podman"]


def test_stock_variant():
    stock = recipes.find("debian-12-podman-stock")
    assert stock.boot == "stock"
    assert stock.name == "debian-12-podman-stock"
    assert stock.packages == recipes.find("debian-12-podman").packages


def test_unknown_recipe_names_known_ones():
    with pytest.raises(RecipeError, match="nosuch.*debian-12-docker, debian-12-podman"):
        recipes.find("nosuch")


@pytest.mark.parametrize("old, new, field", [
    ('version = "1.0.0"\n', "", "version: Missing data for required field"),
    ('"systemd-sysv", "udev"', '"systemd-sysv", "Not_A_Package"', "packages[2]: Not a valid Debian package name"),
    ('suite = "bookworm"', 'suite = "bookworm"\nflavour = "vanilla"', "flavour: Unknown field"),
    ('boot = "fast"', 'boot = "slow"', "boot: Must be one of: fast, stock"),
    ('package = "podman"', 'package = "podman-docker"', "container_engine.package: 'podman-docker' is not in packages"),
    ('"openssh-server", "cloud-init",', '"cloud-init",', "packages: Must include openssh-server"),
    ('"linux-image-cloud-amd64", ', "", "packages: Must include a linux-image-* kernel"),
    ('name = "computed/busybox:latest"', 'name = "Computed/BusyBox"', "container_image.name: Must be a container image"),
    ('packages = ["busybox-static"]', 'packages = ["busybox-static", "x!"]', "container_image.packages[1]:"),
    ("disk_size_gib = 4", 'disk_size_gib = "4"', "disk_size_gib: Not a valid integer"),
])
def test_invalid_recipe_names_the_field(old, new, field):
    assert old in PODMAN
    assert field in parse_error(PODMAN.replace(old, new, 1))


def test_bad_package_in_a_short_list():
    text = PODMAN.replace('packages = [\n', 'packages = [\n  "ok-pkg", "BAD PKG",\n', 1)
    assert "packages[1]: Not a valid Debian package name" in parse_error(text)


def test_invalid_toml():
    assert "not valid TOML" in parse_error('name = "unterminated\n')


def test_name_must_match_file_name(tmp_path: Path):
    path = tmp_path / "other-name.toml"
    path.write_text(PODMAN)
    with pytest.raises(RecipeError, match=r"other-name.toml: name: 'debian-12-podman' must match"):
        recipes.load(path)
    good = tmp_path / "debian-12-podman.toml"
    good.write_text(PODMAN)
    assert recipes.load(good).name == "debian-12-podman"


def test_find_in_another_directory(tmp_path: Path):
    (tmp_path / "mini.toml").write_text(PODMAN.replace('name = "debian-12-podman"', 'name = "mini"'))
    assert recipes.available(tmp_path) == ["mini"]
    assert recipes.find("mini-stock", tmp_path).boot == "stock"
    with pytest.raises(RecipeError, match=r"known: mini\)"):
        recipes.find("debian-12-podman", tmp_path)


def test_hash_is_stable_and_tracks_content(tmp_path: Path):
    a = recipes.find("debian-12-podman")
    b = recipes.load(recipes.RECIPES_DIR / "debian-12-podman.toml")
    assert a.hash == b.hash
    assert a.hash.startswith("sha256:") and len(a.hash) == len("sha256:") + 64

    (tmp_path / "debian-12-podman.toml").write_text(PODMAN.replace('"less",', '"less", "vim-tiny",', 1))
    more = recipes.find("debian-12-podman", tmp_path)
    assert "vim-tiny" in more.packages
    assert more.hash != a.hash

    assert recipes.find("debian-12-podman-stock").hash != a.hash
    assert recipes.find("debian-12-docker").hash != a.hash


def test_hash_covers_build_format_and_guest_files(tmp_path: Path, monkeypatch):
    recipe = recipes.find("debian-12-podman")
    before = recipe.hash
    with monkeypatch.context() as m:
        m.setattr(recipes, "BUILD_FORMAT", recipes.BUILD_FORMAT + 1)
        assert recipe.hash != before
    assert recipe.hash == before

    # a copy of the builder's inputs, so that a guest file can change
    images_dir = tmp_path / "images"
    shutil.copytree(recipes.GUEST_DIR, images_dir / "guest", ignore=shutil.ignore_patterns("__pycache__"))
    for name in recipes.BUILD_INPUTS:
        shutil.copy(recipes.IMAGES_DIR / name, images_dir / name)
    monkeypatch.setattr(recipes, "IMAGES_DIR", images_dir)
    monkeypatch.setattr(recipes, "GUEST_DIR", images_dir / "guest")
    copied = recipe.hash
    (images_dir / "guest" / "common" / "extra.conf").write_text("new guest file\n")
    assert recipe.hash != copied
    (images_dir / "guest" / "common" / "extra.conf").unlink()
    assert recipe.hash == copied
    with (images_dir / "customize.py").open("a") as f:
        f.write("# changed\n")
    assert recipe.hash != copied
