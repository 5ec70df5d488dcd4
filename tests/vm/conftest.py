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
