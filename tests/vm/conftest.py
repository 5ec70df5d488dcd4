"""Integration tests boot real guests: QEMU (TCG here, KVM where COMPUTED_QEMU_ACCEL=kvm)
from images built by the project. scripts/test builds the images first; a missing one is
built here (once: a matching recipe hash is reused)."""

from __future__ import annotations

import pytest

from computed.settings import Settings
from images import recipe as recipes
from images.builder import Builder


def pytest_collection_modifyitems(items):
    for item in items:
        if "/tests/vm/" in str(item.fspath):
            item.add_marker(pytest.mark.vm)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.load()


@pytest.fixture(scope="session")
def built_image(settings):
    """built_image(name) -> the stored image, built now if missing or out of date."""
    builder = Builder(settings)
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = builder.build(recipes.find(name)).image
        return cache[name]

    return get


@pytest.fixture(scope="session")
def qemu_tmp(settings):
    """mkdtemp() for files QEMU must open: libvirt runs QEMU as its own user, who cannot
    enter pytest's private (0700) temporary directories."""
    import shutil
    import tempfile
    from pathlib import Path

    root = settings.var_dir / "test-tmp"
    root.mkdir(parents=True, exist_ok=True)
    made = []

    def make(prefix: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
        path.chmod(0o755)
        made.append(path)
        return path

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)
