"""Settings: built-in defaults, overridden by a TOML config file, overridden by the environment.

The config file is ``$COMPUTED_CONFIG`` if set, else ``computed.toml`` in the state directory
(``var/`` of a source checkout, ``/var/lib/computed`` otherwise). Each setting below names its
table and key in that file and its environment variable.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """A config file or environment variable that cannot be used."""


def default_var_dir() -> Path:
    """``var/`` beside the code in a source checkout; the FHS place once installed."""
    if (SOURCE_ROOT / "setup.cfg").is_file():
        return SOURCE_ROOT / "var"
    return Path("/var/lib/computed")


@dataclass(frozen=True)
class Settings:
    var_dir: Path
    #: where built images live (``[images] store``, ``COMPUTED_IMAGE_STORE``)
    image_store: Path
    #: downloaded Debian packages and build scratch space (``[images] cache``, ``COMPUTED_IMAGE_CACHE``)
    image_cache: Path
    #: the image ``computed image build --default`` builds (``[images] default``, ``COMPUTED_DEFAULT_IMAGE``)
    default_image: str = "debian-12-podman"
    #: a Debian mirror URL for image builds; unset means mmdebstrap's default mirrors
    #: (``[images] debian_mirror``, ``COMPUTED_DEBIAN_MIRROR``)
    debian_mirror: str | None = None

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        var_dir = Path(env.get("COMPUTED_VAR_DIR") or default_var_dir())
        config_path = Path(env.get("COMPUTED_CONFIG") or var_dir / "computed.toml")
        images = _read_config(config_path, explicit=bool(env.get("COMPUTED_CONFIG"))).get("images", {})
        if not isinstance(images, dict):
            raise SettingsError(f"{config_path}: [images] must be a table")

        def pick(key: str, var: str, default):
            value = env.get(var) or images.get(key) or default
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise SettingsError(f"{config_path}: [images] {key} must be a string")
            return value

        return cls(
            var_dir=var_dir,
            image_store=Path(pick("store", "COMPUTED_IMAGE_STORE", var_dir / "images")).absolute(),
            image_cache=Path(pick("cache", "COMPUTED_IMAGE_CACHE", var_dir / "cache" / "images")).absolute(),
            default_image=pick("default", "COMPUTED_DEFAULT_IMAGE", cls.default_image),
            debian_mirror=pick("debian_mirror", "COMPUTED_DEBIAN_MIRROR", None),
        )


def _read_config(path: Path, explicit: bool) -> dict:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        if explicit:
            raise SettingsError(f"config file {path} (from COMPUTED_CONFIG) does not exist") from None
        return {}
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"{path}: {e}") from None
