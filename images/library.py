"""The image library: one directory per image, replaced atomically. (Its setting and the
messages users see keep the name "image store": ``[images] store``.)

Layout under the library's root (a setting, ``var/images`` by default)::

    NAME/BUILD/manifest.json, disk.qcow2, vmlinuz, initrd.img, packages.txt
    NAME/current -> BUILD           (symlink, swapped atomically on publish)
    .staging/NAME+XXXX/             (a build in progress; never listed)
    .locks/NAME.lock                (held while NAME is built or removed)

BUILD is the first 12 hex digits of the recipe hash. A build writes into a staging
directory on the same file system and is renamed into place only once complete, so the
store never shows a half-built image; staging left by a killed build is removed the next
time the store is opened.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .manifest import Manifest, ManifestError

CURRENT = "current"
#: Separates an image name from a random suffix in scratch names; never part of a name.
SCRATCH_SEP = "+"
VALID_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")


class StoreError(RuntimeError):
    pass


@dataclass(frozen=True)
class ImageBuild:
    path: Path
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    def artifact_path(self, role: str) -> Path:
        return self.path / self.manifest.artifacts[role]["file"]

    def to_dict(self) -> dict:
        """The manifest, with the absolute path of the image directory and of each artifact."""
        data = self.manifest.to_dict()
        data["path"] = str(self.path)
        data["artifacts"] = {role: {**art, "path": str(self.path / art["file"])}
                             for role, art in data["artifacts"].items()}
        return data


class ImageLibrary:
    def __init__(self, root: Path):
        self.root = Path(root).absolute()
        self._staging = self.root / ".staging"
        self._locks = self.root / ".locks"
        for d in (self.root, self._staging, self._locks):
            d.mkdir(parents=True, exist_ok=True)
        self._remove_abandoned_staging()

    # -- reading -----------------------------------------------------------------------

    def get(self, name: str) -> ImageBuild | None:
        if not isinstance(name, str) or not VALID_NAME.fullmatch(name):
            return None
        current = self.root / name / CURRENT
        if not current.is_symlink():
            return None
        path = current.resolve()
        try:
            return ImageBuild(path, Manifest.read(path))
        except ManifestError:
            return None

    def list(self) -> list[ImageBuild]:
        images = []
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            image = self.get(entry.name)
            if image is not None:
                images.append(image)
        return images

    # -- writing -----------------------------------------------------------------------

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Exclusive right to build or remove NAME, across processes."""
        with open(self._locks / f"{name}.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    @contextmanager
    def staging(self, name: str) -> Iterator[Path]:
        """A fresh directory to build NAME's files in; removed on exit unless published.
        The caller must hold ``lock(name)``."""
        path = Path(tempfile.mkdtemp(prefix=f"{name}{SCRATCH_SEP}", dir=self._staging))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def publish(self, staging: Path) -> ImageBuild:
        """Move a complete build (its manifest written last) into place and make it NAME's
        current build; older builds of NAME are removed. The caller must hold the lock."""
        manifest = Manifest.read(staging)
        problems = manifest.verify(staging)
        if problems:
            raise StoreError("refusing to publish an incomplete build: " + "; ".join(problems))
        image_dir = self.root / manifest.name
        image_dir.mkdir(exist_ok=True)
        build = manifest.recipe_hash.split(":")[-1][:12]
        final = image_dir / build
        aside = None
        if final.exists():  # a forced rebuild of the same recipe: move the old one aside first
            aside = Path(tempfile.mkdtemp(prefix=f"{manifest.name}{SCRATCH_SEP}old", dir=self._staging))
            os.rename(final, aside / build)
        _fsync_tree(staging)
        os.chmod(staging, 0o755)  # hypervisor users (libvirt's qemu) read base disks
        os.rename(staging, final)
        link_tmp = image_dir / f".{CURRENT}.tmp"
        link_tmp.unlink(missing_ok=True)
        link_tmp.symlink_to(build)
        os.replace(link_tmp, image_dir / CURRENT)
        _fsync_dir(image_dir)
        for old in image_dir.iterdir():
            if old.name not in (build, CURRENT) and old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
        if aside:
            shutil.rmtree(aside, ignore_errors=True)
        return ImageBuild(final, manifest)

    def remove(self, name: str) -> bool:
        """Remove NAME and all its builds; False if there was no such image."""
        image_dir = self.root / name
        if not VALID_NAME.fullmatch(name) or not image_dir.is_dir():
            return False
        with self.lock(name):
            trash = Path(tempfile.mkdtemp(prefix=f"{name}{SCRATCH_SEP}rm", dir=self._staging))
            os.rename(image_dir, trash / name)
            shutil.rmtree(trash)
        return True

    def _remove_abandoned_staging(self) -> None:
        """Remove staging left by builds that died; a build in progress holds its lock."""
        for entry in self._staging.iterdir():
            name = entry.name.split(SCRATCH_SEP, 1)[0]
            with open(self._locks / f"{name}.lock", "w") as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                try:
                    shutil.rmtree(entry, ignore_errors=True)
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for entry in path.iterdir():
        if entry.is_file():
            with entry.open("rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(path)
