from pathlib import Path

import pytest

from computed.settings import SOURCE_ROOT, Settings, SettingsError, default_var_dir


def test_default_var_dir_in_a_checkout():
    assert default_var_dir() == SOURCE_ROOT / "var"


def test_defaults_under_var_dir(tmp_path: Path):
    s = Settings.load({"COMPUTED_VAR_DIR": str(tmp_path)})
    assert s.var_dir == tmp_path
    assert s.image_library == tmp_path / "images"
    assert s.image_cache == tmp_path / "cache" / "images"
    assert s.default_image == "debian-12-podman"
    assert s.debian_mirror is None


def test_environment_overrides(tmp_path: Path):
    s = Settings.load({
        "COMPUTED_VAR_DIR": str(tmp_path / "var"),
        "COMPUTED_IMAGE_STORE": str(tmp_path / "store"),
        "COMPUTED_IMAGE_CACHE": str(tmp_path / "cache"),
        "COMPUTED_DEBIAN_MIRROR": "http://mirror.example/debian",
        "COMPUTED_DEFAULT_IMAGE": "debian-12-docker",
    })
    assert s.var_dir == tmp_path / "var"
    assert s.image_library == tmp_path / "store"
    assert s.image_cache == tmp_path / "cache"
    assert s.debian_mirror == "http://mirror.example/debian"
    assert s.default_image == "debian-12-docker"


def test_relative_paths_become_absolute(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = Settings.load({"COMPUTED_VAR_DIR": str(tmp_path), "COMPUTED_IMAGE_STORE": "rel/store"})
    assert s.image_library == tmp_path / "rel" / "store"


CONFIG = """
[images]
store = "{d}/from-file/store"
cache = "{d}/from-file/cache"
default = "debian-12-docker"
debian_mirror = "http://file.example/debian"
"""


def test_config_file(tmp_path: Path):
    config = tmp_path / "elsewhere.toml"
    config.write_text(CONFIG.format(d=tmp_path))
    s = Settings.load({"COMPUTED_VAR_DIR": str(tmp_path / "var"), "COMPUTED_CONFIG": str(config)})
    assert s.image_library == tmp_path / "from-file" / "store"
    assert s.image_cache == tmp_path / "from-file" / "cache"
    assert s.default_image == "debian-12-docker"
    assert s.debian_mirror == "http://file.example/debian"


def test_config_file_in_var_dir_is_read_by_default(tmp_path: Path):
    (tmp_path / "computed.toml").write_text(CONFIG.format(d=tmp_path))
    s = Settings.load({"COMPUTED_VAR_DIR": str(tmp_path)})
    assert s.image_library == tmp_path / "from-file" / "store"


def test_environment_beats_config_file(tmp_path: Path):
    (tmp_path / "computed.toml").write_text(CONFIG.format(d=tmp_path))
    s = Settings.load({"COMPUTED_VAR_DIR": str(tmp_path), "COMPUTED_IMAGE_STORE": str(tmp_path / "env-store"),
                       "COMPUTED_DEFAULT_IMAGE": "from-env"})
    assert s.image_library == tmp_path / "env-store"
    assert s.default_image == "from-env"
    assert s.image_cache == tmp_path / "from-file" / "cache"  # not overridden


def test_missing_explicit_config_file(tmp_path: Path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(SettingsError, match="nope.toml.*does not exist"):
        Settings.load({"COMPUTED_VAR_DIR": str(tmp_path), "COMPUTED_CONFIG": str(missing)})


@pytest.mark.parametrize("text, message", [
    ("[images\nstore = 1", "computed.toml"),
    ("[images]\nstore = 3\n", r"\[images\] store must be a string"),
    ("[images]\ndefault = [\"a\"]\n", r"\[images\] default must be a string"),
    ("images = 3\n", r"\[images\] must be a table"),
])
def test_bad_config_file(tmp_path: Path, text, message):
    (tmp_path / "computed.toml").write_text(text)
    with pytest.raises(SettingsError, match=message):
        Settings.load({"COMPUTED_VAR_DIR": str(tmp_path)})


def test_empty_config_variable_means_unset(tmp_path: Path):
    s = Settings.load({"COMPUTED_VAR_DIR": str(tmp_path), "COMPUTED_CONFIG": ""})
    assert s.image_library == tmp_path / "images"
