"""An image's manifest: what was built, from which recipe, and the checksum of every file.

Stored as ``manifest.json`` beside the artifacts; artifact paths in it are file names
relative to the manifest, so an image directory can be moved or copied whole.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

MANIFEST_FILE = "manifest.json"
ARTIFACT_ROLES = ("disk", "kernel", "initrd")


class ManifestError(ValueError):
    pass


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def describe_artifact(path: Path, **extra) -> dict:
    return {"file": path.name, "size": path.stat().st_size, "sha256": sha256_file(path), **extra}


@dataclass
class Manifest:
    name: str
    version: str
    recipe_hash: str
    built_at: str
    build_seconds: float
    suite: str
    architecture: str
    boot: str
    kernel_version: str
    kernel_cmdline: str
    default_user: str
    #: {"name": "podman", "package": "podman", "version": "4.3.1+ds1-8+deb12u1"}
    container_engine: dict
    #: reference of the preloaded container image, e.g. "computed/busybox:latest"
    container_image: str
    #: role ("disk", "kernel", "initrd", "packages") -> {"file", "size", "sha256", ...}
    artifacts: dict
    description: str = ""
    packages_installed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST_FILE
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ManifestError(f"{path}: {e}") from None
        if not isinstance(data, dict):
            raise ManifestError(f"{path}: not a JSON object")
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise ManifestError(f"{path}: missing {', '.join(missing)}")
        if not isinstance(data["artifacts"], dict) or not all(
                isinstance(a, dict) and {"file", "size", "sha256"} <= a.keys() for a in data["artifacts"].values()):
            raise ManifestError(f"{path}: artifacts must map roles to {{file, size, sha256}}")
        absent = [r for r in ARTIFACT_ROLES if r not in data["artifacts"]]
        if absent:
            raise ManifestError(f"{path}: artifacts lack {', '.join(absent)}")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def verify(self, directory: Path) -> list[str]:
        """Problems with the artifacts on disk (missing, wrong size or checksum); empty if none."""
        problems = []
        for role, art in self.artifacts.items():
            path = directory / art["file"]
            if not path.is_file():
                problems.append(f"{role}: {path} is missing")
            elif path.stat().st_size != art["size"]:
                problems.append(f"{role}: {path} has size {path.stat().st_size}, manifest says {art['size']}")
            elif sha256_file(path) != art["sha256"]:
                problems.append(f"{role}: {path} does not match its sha256")
        return problems


#: Keys every manifest must have: the fields without a default.
REQUIRED_KEYS = tuple(f.name for f in fields(Manifest) if f.default is MISSING and f.default_factory is MISSING)
