"""Shared fixtures for every unit test.

- Fake (but complete and checksummed) image builds (tests/fakes.py), and the store on both
  databases (SQLite, and a throwaway PostgreSQL server: tests/postgres.py).
- The whole service (store, worker, provisioner) on libvirt's test driver
  (``test:///default``), with a published fake image whose disk is a real, empty qcow2 (the
  provisioner layers instance disks on it with ``qemu-img create -b``): ``settings``,
  ``make_app``, ``app``, ``client``, ``service``, ``wait``, ``our_domains`` and the helpers
  around them. test:///default is one shared state per process: every domain a test makes
  is destroyed and undefined when its app is torn down.
"""

from __future__ import annotations

import random
import shlex
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import libvirt
import pytest
from flask.testing import FlaskClient

import images.library
from api.app import create_app
from computed.accounts.registry import Credentials
from computed.hosts.addresses import port_is_free
from computed.settings import Settings
from images.manifest import describe_artifact
from images.library import ImageLibrary, ImageBuild
from tests import libvirtd_lock, postgres
from tests.fakes import fake_hash, write_fake_build


@pytest.fixture
def publish_fake():
    """publish_fake(store, name, recipe_hash=None) -> ImageBuild: a fake build, published."""

    def publish(store: ImageLibrary, name: str = "testimg", recipe_hash: str | None = None) -> ImageBuild:
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

# -- the whole service on libvirt's test driver -------------------------------------------

TEST_URI = "test:///default"
IMAGE = "debian-12-podman"
DOMAIN_PREFIX = "computed-"

libvirt.registerErrorHandler(lambda ctx, err: None, None)


class CheckedClient(FlaskClient):
    """A test client that fails the test at once if any request answers 500, and sends the
    app's test account's credentials (HTTP Basic) unless given ``auth`` (None: none)."""

    def open(self, *args, **kwargs):
        kwargs.setdefault("auth", self.application.config.get("TEST_AUTH"))
        response = super().open(*args, **kwargs)
        assert response.status_code != 500, (
            f"the service answered 500 to {args[:1]} {kwargs.get('method', '')}: {response.get_data(as_text=True)}")
        return response


def remove_our_domains(conn: libvirt.virConnect) -> None:
    for dom in conn.listAllDomains():
        if not dom.name().startswith(DOMAIN_PREFIX):
            continue
        try:
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        except libvirt.libvirtError:
            pass


@pytest.fixture(scope="session")
def base_qcow2(tmp_path_factory) -> Path:
    """One real, empty 64 MiB qcow2, copied into every test's image."""
    path = tmp_path_factory.mktemp("qcow2") / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    return path


def find_free_ports(count: int) -> tuple[int, int]:
    """COUNT consecutive ports free on 127.0.0.1 now, at a random place below the kernel's
    ephemeral range (so outgoing connections do not take them meanwhile)."""
    for _ in range(200):
        low = random.randrange(20000, 32000 - count)
        if all(port_is_free("127.0.0.1", p) for p in range(low, low + count)):
            return low, low + count - 1
    raise RuntimeError(f"no {count} free consecutive ports found")


def write_node_xml(path: Path, cpus: int, memory_mib: int) -> str:
    """A libvirt test driver node at PATH with CPUS CPUs and MEMORY_MIB of memory (what its
    getInfo says); its URI. Each connection to it has its own state, unlike test:///default."""
    path.write_text(f"""<node>
  <cpu><mhz>2000</mhz><model>x86_64</model><nodes>1</nodes><sockets>1</sockets><cores>{cpus}</cores>
    <threads>1</threads><active>{cpus}</active></cpu>
  <memory>{memory_mib * 1024}</memory>
</node>
""")
    return f"test://{path}"


@pytest.fixture
def node_uri(tmp_path):
    """node_uri(cpus=4, memory_mib=2048, name="node") -> the URI of a test driver node of that
    size (a second host with a capacity of its own)."""

    def make(cpus: int = 4, memory_mib: int = 2048, name: str = "node") -> str:
        return write_node_xml(tmp_path / f"{name}.xml", cpus, memory_mib)

    return make


@pytest.fixture
def free_ports():
    """free_ports(count) -> (low, high): a small SSH port range that is free now."""
    return find_free_ports


@pytest.fixture
def settings(tmp_path: Path, store_backend: str, request) -> Settings:
    """The service's settings; its store is SQLite under tmp_path, or (the ``pg`` variant of
    every test that uses them) a new database on the session's PostgreSQL server."""
    store = {}
    if store_backend == "postgresql":
        store["database_url"] = request.getfixturevalue("new_postgres_database")()
    low, high = find_free_ports(100)  # a window unlikely to collide with a parallel run
    # the test driver's host has 16 CPUs and 3 GiB: room for 24 t3.micro with this overcommit
    # tables of wrong credentials from one test client: the failure limit (tests of its own:
    # tests/unit/api/test_ratelimit.py) is out of their way
    return Settings.load({"COMPUTED_VAR_DIR": str(tmp_path)}, libvirt_uri=TEST_URI, ssh_ports=(low, high),
                         boot_timeout=5, stop_timeout=2, workers=2, memory_overcommit=8.0,
                         auth_failures_per_source=100_000, auth_failures_per_key=100_000, **store)


@pytest.fixture
def publish_image(settings: Settings, fake_build, base_qcow2: Path, monkeypatch):
    """publish_image(name=IMAGE, version="1.0.0") -> ImageBuild with a real qcow2 disk."""
    # a test's image library is thrown away with it: skip publish's fsyncs (slow on a busy disk)
    monkeypatch.setattr(images.library, "_fsync_tree", lambda path: None)
    monkeypatch.setattr(images.library, "_fsync_dir", lambda path: None)

    def publish(name: str = IMAGE, version: str = "1.0.0"):
        store = ImageLibrary(settings.image_library)
        with store.lock(name), store.staging(name) as staging:
            manifest = fake_build(staging, name, version=version)
            shutil.copyfile(base_qcow2, staging / "disk.qcow2")
            manifest.artifacts["disk"] = describe_artifact(staging / "disk.qcow2", virtual_size=64 << 20)
            manifest.write(staging)
            return store.publish(staging)

    return publish


@pytest.fixture
def image(publish_image):
    return publish_image()


@pytest.fixture
def make_app(settings: Settings, image):
    """make_app(**setting_changes) -> a Flask app on its own Service; closed at teardown.
    Its test client is signed in as the account "tester" (one per store, non-admin), whose
    ``Caller`` is ``app.config["TEST_CALLER"]``."""
    apps = []
    accounts: dict[str, Credentials] = {}

    def make(clock=None, **changes):
        app = create_app(settings.replace(**changes) if changes else settings, clock=clock)
        app.test_client_class = CheckedClient
        apps.append(app)
        svc = app.extensions["computed"]
        if svc.settings.database_url not in accounts:
            accounts[svc.settings.database_url] = svc.accounts.create("tester")
        creds = accounts[svc.settings.database_url]
        app.config["TEST_AUTH"] = (creds.access_key_id, creds.secret_access_key)
        app.config["TEST_CALLER"] = creds.caller
        return app

    yield make
    for app in apps:
        service = app.extensions["computed"]
        service.worker.idle(60)
        try:
            remove_our_domains(service.default_driver.conn())
        finally:
            service.close()
    conn = libvirt.open(TEST_URI)  # whatever a failed teardown above left behind
    try:
        remove_our_domains(conn)
    finally:
        conn.close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def service(app):
    return app.extensions["computed"]


@pytest.fixture
def wait(service):
    """wait(): until the background worker has nothing queued or running (at most 10 s)."""

    def wait_idle(svc=None):
        assert (svc or service).worker.idle(60), "background work still running after 60 s"

    return wait_idle


@pytest.fixture
def our_domains(service):
    """our_domains() -> {name: libvirt state} of the computed-* domains on test:///default."""

    def list_domains(svc=None) -> dict[str, str]:
        host = (svc or service).default_driver
        return {d.name(): host.state(d.name()) for d in host.conn().listAllDomains()
                if d.name().startswith(DOMAIN_PREFIX)}

    return list_domains


@pytest.fixture
def expect_error():
    """expect_error(response, status, code=None) -> message: the body is exactly
    {"error": {"code", "message"}} with a non-empty message."""

    def check(response, status: int, code: str | set[str] | None = None) -> str:
        assert response.status_code == status, response.get_data(as_text=True)
        assert response.mimetype == "application/json"
        body = response.get_json()
        assert isinstance(body, dict) and set(body) == {"error"}, body
        assert isinstance(body["error"], dict) and set(body["error"]) == {"code", "message"}, body
        assert isinstance(body["error"]["code"], str) and body["error"]["code"]
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]
        if isinstance(code, str):
            assert body["error"]["code"] == code, body
        elif code is not None:
            assert body["error"]["code"] in code, body
        return body["error"]["message"]

    return check


@contextmanager
def _case(label):
    try:
        yield
    except AssertionError as e:
        raise AssertionError(f"case {label!r}: {e}") from e


@pytest.fixture
def case():
    """with case(label): ... -- names the failing case of a table checked in one test (one
    app for many requests keeps the suite fast)."""
    return _case


@pytest.fixture
def parse_ssh():
    """parse_ssh(command) -> ({"-i": ..., "-p": ...}, [the other arguments]) of an ssh command line."""

    def parse(command: str):
        args = shlex.split(command)
        assert args[0] == "ssh", command
        options, rest = {}, []
        it = iter(args[1:])
        for arg in it:
            if arg in ("-i", "-p"):
                options[arg] = next(it)
            else:
                rest.append(arg)
        return options, rest

    return parse


@pytest.fixture
def launch(client):
    """launch(**body) -> the 202 response's JSON (size defaults to t3.micro)."""

    def post(**body):
        body.setdefault("size", "t3.micro")
        response = client.post("/v1/instances", json=body)
        assert response.status_code == 202, response.get_data(as_text=True)
        return response.get_json()

    return post


@pytest.fixture
def nothing_launched(service, settings: Settings, our_domains):
    """nothing_launched(): no instance rows, no instance files, no domains."""

    def check():
        assert service.instances.count() == 0
        leftovers = sorted(p.name for p in settings.instances_dir.iterdir()) if settings.instances_dir.exists() else []
        assert leftovers == []
        assert our_domains() == {}

    return check
