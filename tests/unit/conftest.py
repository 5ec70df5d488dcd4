"""Shared fixtures for the unit tests: fake (but complete and checksummed) image builds
(tests/fakes.py), and
the store on both databases (SQLite, and a throwaway PostgreSQL server: tests/postgres.py)."""

from __future__ import annotations

import pytest

from images.store import ImageStore, StoredImage
from tests import libvirtd_lock, postgres
from tests.fakes import fake_hash, write_fake_build


@pytest.fixture
def publish_fake():
    """publish_fake(store, name, recipe_hash=None) -> StoredImage: a fake build, published."""

    def publish(store: ImageStore, name: str = "testimg", recipe_hash: str | None = None) -> StoredImage:
        with store.lock(name), store.staging(name) as staging:
            write_fake_build(staging, name, recipe_hash)
            return store.publish(staging)

    return publish


@pytest.fixture(autouse=True)
def no_real_builds(monkeypatch):
    """Unit tests never run mmdebstrap, chroot or mkfs, whatever a bug makes the code under test do."""
    import images.builder

    def refuse(*args, **kwargs):
        pytest.fail("a unit test tried to run a real image build step")

    monkeypatch.setattr(images.builder._Log, "run", refuse)
    monkeypatch.setattr(images.builder, "make_disk", refuse)


@pytest.fixture(name="fake_hash")
def fake_hash_fixture():
    """fake_hash(seed) -> "sha256:<64 hex>" (see fake_hash)."""
    return fake_hash


@pytest.fixture
def fake_build():
    """fake_build(directory, name, recipe_hash=None) -> Manifest (see write_fake_build)."""
    return write_fake_build


def pytest_collection_modifyitems(config, items):
    """A test marked ``sqlite_only`` has no PostgreSQL variant."""
    deselected = [i for i in items if i.get_closest_marker("postgresql") and i.get_closest_marker("sqlite_only")]
    if deselected:
        items[:] = [i for i in items if i not in set(deselected)]
        config.hook.pytest_deselected(items=deselected)


@pytest.fixture(scope="session")
def postgres_server():
    """The session's throwaway PostgreSQL server (tests/postgres.py); skipped where
    PostgreSQL is not installed, a failure instead in CI."""
    try:
        server = postgres.Server()
    except postgres.Unavailable as e:
        postgres.unavailable(str(e))
    yield server
    server.stop()


@pytest.fixture
def new_postgres_database(postgres_server):
    """new_postgres_database(migrated=True) -> the URL of a new database on the session's
    server, at the schema's head (or empty); dropped when the test ends."""
    urls = []

    def make(migrated: bool = True) -> str:
        urls.append(postgres_server.create_database(migrated))
        return urls[-1]

    yield make
    for url in urls:
        postgres_server.drop_database(url)


@pytest.fixture(params=postgres.BACKENDS)
def store_backend(request) -> str:
    """"sqlite" or "postgresql": the test runs once with each."""
    return request.param


@pytest.fixture
def store_url(store_backend, tmp_path, request) -> str:
    """A new, empty store's URL: an SQLite file under tmp_path, or a PostgreSQL database."""
    if store_backend == "sqlite":
        return f"sqlite:///{tmp_path / 'c.db'}"
    return request.getfixturevalue("new_postgres_database")(migrated=False)


@pytest.fixture
def libvirtd_up():
    """For a test that uses the system libvirtd: the VM part of the suite, which runs at the
    same time (scripts/test), does not stop it meanwhile (tests/libvirtd_lock.py)."""
    with libvirtd_lock.shared():
        yield
