"""Management keys (one per host, rotatable, held to the checks by a forced command) and the
guests' host keys (made by the service, given in the seed, the public half kept and checked).

The forced command and the host key check run against a real OpenSSH server on loopback
(tests/vm/sshd.py): the service's management key line in its authorized_keys, as a guest
has it."""

from __future__ import annotations

import io
import os
import stat
import time

import paramiko
import pycdlib
import pytest
import yaml
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, select, update

from computed.compute.state import State
from computed.store.engine import MIGRATIONS, Database, make_engine
from computed.store.models import Instance, ManagementKey as KeyRow
from computed.virt import ssh
from computed.virt.management_key import LEGACY_FILE, ManagementKeys, authorized_line, forced_command
from tests.vm.sshd import Sshd, SshdUnavailable


def read_iso(path, name: str) -> bytes:
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        buf = io.BytesIO()
        iso.get_file_from_iso_fp(buf, joliet_path="/" + name)
        return buf.getvalue()
    finally:
        iso.close()


@pytest.fixture(scope="module")
def sshd():
    try:
        server = Sshd()
    except SshdUnavailable as e:
        pytest.skip(str(e))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def management(sshd):
    """A management key in the server's authorized_keys as a guest holds it (engine: a
    command that only says it ran), beside the server's plain client key."""
    key = ssh.generate_keypair("computed-management")
    line = authorized_line(key.public_openssh, "echo", "engine-ran")
    with (sshd.dir / "authorized_keys").open("a") as f:
        f.write(line + "\n")
    return key


def login(sshd, pkey, host_key=None) -> paramiko.SSHClient:
    if host_key is None:
        host_key = sshd.host_key.with_suffix(".pub").read_text()
    return ssh.connect("127.0.0.1", sshd.port, "root", pkey, host_key=host_key)


# -- the forced command ---------------------------------------------------------------------

def test_the_management_key_runs_only_the_checks(sshd, management):
    client = login(sshd, management.pkey())
    try:
        assert ssh.run(client, "ready", timeout=30) == (0, "ready\n", "")
        rc, out, _ = ssh.run(client, "boot-id", timeout=30)
        assert rc == 0 and out == open("/proc/sys/kernel/random/boot_id").read()
        # the engine check runs "nice -n 19 ENGINE run --rm IMAGE true" (ENGINE=echo here)
        assert ssh.run(client, "engine", timeout=30) == (0, "run --rm engine-ran true\n", "")
        for refused in ("id", "ready; id", "ready && id", "$(id)", "engine-ran", "cat /etc/shadow", "",
                        "ready\nid", "sh -c id"):
            rc, out, err = ssh.run(client, refused, timeout=30)
            assert (rc, out) == (126, ""), refused
            assert "only the checks ready, boot-id, engine" in err
    finally:
        client.close()


def test_the_management_key_gets_no_shell_pty_or_forwarding(sshd, management):
    client = login(sshd, management.pkey())
    try:
        transport = client.get_transport()
        shell = transport.open_session()
        shell.invoke_shell()  # no command: SSH_ORIGINAL_COMMAND unset, refused as well
        assert shell.recv_exit_status() == 126
        with pytest.raises(paramiko.SSHException):
            transport.open_session().get_pty()
        with pytest.raises(paramiko.ChannelException):
            transport.open_channel("direct-tcpip", ("127.0.0.1", sshd.port), ("127.0.0.1", 0))
    finally:
        client.close()


def test_the_users_key_keeps_its_shell(sshd, management):
    client = login(sshd, paramiko.Ed25519Key.from_private_key_file(str(sshd.client_key)))
    try:
        assert ssh.run(client, "id -u; echo more", timeout=30) == (0, "0\nmore\n", "")
    finally:
        client.close()


def test_the_forced_command_quotes_what_the_manifest_names():
    # an odd engine or image name stays one word of the check; no backslash or newline
    program = forced_command("podman", "computed/busybox:latest; id")
    assert "'computed/busybox:latest; id'" in program
    line = authorized_line("ssh-ed25519 AAAA computed-management", "podman", "img")
    assert line.startswith('restrict,command="case \\"$SSH_ORIGINAL_COMMAND\\" in ')
    assert line.endswith('esac" ssh-ed25519 AAAA computed-management')
    with pytest.raises(ValueError):
        authorized_line("ssh-ed25519 AAAA", "podman", "a\\b")


# -- the host key check ---------------------------------------------------------------------

def test_a_wrong_host_key_is_refused_before_any_login(sshd, management):
    other = ssh.generate_keypair()
    before = sshd.logins()
    with pytest.raises(paramiko.BadHostKeyException):
        login(sshd, management.pkey(), host_key=other.public_openssh)
    with pytest.raises(ssh.SSHTimeout) as timeout:
        ssh.wait_for_login("127.0.0.1", sshd.port, "root", management.pkey(), time.monotonic() + 3,
                           host_key=other.public_openssh, probe="ready")
    assert "host key" in str(timeout.value) and other.fingerprint in str(timeout.value)
    assert sshd.logins() == before  # never authenticated to a server with another key
    # and no refused connection left open (they would fill sshd's MaxStartups)
    deadline = time.monotonic() + 5
    while open_connections(sshd.port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert open_connections(sshd.port) == 0
    # the right one: logged in, the probe checked
    client = ssh.wait_for_login("127.0.0.1", sshd.port, "root", management.pkey(), time.monotonic() + 30,
                                host_key=sshd.host_key.with_suffix(".pub").read_text(), probe="ready")
    client.close()
    assert sshd.logins() == before + 1


def open_connections(port: int) -> int:
    """This machine's established TCP connections to 127.0.0.1:PORT (/proc/net/tcp)."""
    target = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return sum(1 for row in rows if row[2] == target and row[3] == "01")


def test_the_pinned_policy_learns_nothing():
    policy = ssh.PinnedPolicy(ssh.generate_keypair().public_openssh)
    client = paramiko.SSHClient()
    shown = ssh.generate_keypair().pkey()
    with pytest.raises(ssh.HostKeyMismatch):
        policy.missing_host_key(client, "[127.0.0.1]:2222", shown)
    assert len(client.get_host_keys()) == 0


def test_fingerprint_lines():
    kp = ssh.generate_keypair()
    assert ssh.fingerprint_line(kp.public_openssh) == f"256 {kp.fingerprint} (ED25519)"
    assert ssh.host_key_entry("127.0.0.1", 42201) == "[127.0.0.1]:42201"
    assert ssh.host_key_entry("node-2", 22) == "node-2"


# -- keys per host, rotation ----------------------------------------------------------------

@pytest.fixture
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'c.db'}")
    yield database
    database.dispose()


def add_instance(db, instance_id: str, key_id: str | None, state: str = State.RUNNING) -> None:
    from tests.unit.store.test_db import instance
    with db.session() as s:
        s.add(instance(id=instance_id, state=state, management_key_id=key_id))


def add_host(db, name: str) -> None:
    from computed.store.models import Host
    with db.session() as s:
        s.add(Host(name=name, uri=f"test:///{name}.xml", address="127.0.0.1"))


def test_one_key_per_host_in_0600_files(tmp_path, db):
    for name in ("local", "node-2"):
        add_host(db, name)
    keys = ManagementKeys(tmp_path / "management", db)
    local, node = keys.current("local"), keys.current("node-2")
    assert local.id != node.id and local.public_openssh != node.public_openssh
    assert keys.current("local") == local  # kept, not made again
    assert stat.S_IMODE((tmp_path / "management").stat().st_mode) == 0o700
    for key in (local, node):
        assert stat.S_IMODE(key.path.stat().st_mode) == 0o600
        assert key.pkey().get_base64() == key.public_openssh.split()[1]
        assert "PRIVATE" not in repr(key) and key.path.read_text().splitlines()[1] not in repr(key)
    # a key whose private half is gone is retired, and the host gets a new one
    node.path.unlink()
    again = keys.current("node-2")
    assert again.id != node.id and again.path.is_file()
    with db.reading() as s:
        assert s.get(KeyRow, node.id).retired_at is not None
    assert keys.prune() == [node.id]
    node = again
    with db.reading() as s:  # only public halves in the store
        rows = s.scalars(select(KeyRow)).all()
    assert {r.public_key for r in rows} == {local.public_openssh, node.public_openssh}
    assert not any("PRIVATE" in r.public_key for r in rows)


def test_rotation_keeps_the_old_key_until_its_guests_are_gone(tmp_path, db):
    add_host(db, "local")
    keys = ManagementKeys(tmp_path / "management", db)
    old = keys.current("local")
    add_instance(db, "i-00000000000000001", old.id)
    new = keys.rotate("local")
    assert new.id != old.id and keys.current("local") == new
    assert old.path.is_file()  # its guest still runs: still valid
    with db.reading() as s:
        assert s.get(KeyRow, old.id).retired_at is not None
        inst = s.get(Instance, "i-00000000000000001")
    assert keys.of(inst) == old and keys.in_use(old.id) == 1
    assert keys.prune() == []
    with db.session() as s:
        s.execute(update(Instance).values(state=State.TERMINATED))
    assert keys.prune() == [old.id]
    assert not old.path.exists() and keys.of(inst) is None
    assert [r.id for r in keys.list("local")] == [new.id]
    from computed.errors import HostNotFound
    with pytest.raises(HostNotFound):
        keys.rotate("nope")


def test_the_old_global_key_serves_its_instances_then_goes(tmp_path, db):
    directory = tmp_path / "management"
    directory.mkdir()
    legacy = ssh.generate_keypair()
    (directory / LEGACY_FILE).write_text(legacy.private_openssh)
    add_instance(db, "i-00000000000000002", None)
    keys = ManagementKeys(directory, db)
    with db.reading() as s:
        inst = s.get(Instance, "i-00000000000000002")
    key = keys.of(inst)
    assert key.id is None and not key.restricted
    assert key.public_openssh.split()[1] == legacy.public_openssh.split()[1]
    # no forced command in its guests: the same checks as plain commands
    assert key.command("engine", "podman", "computed/busybox:latest") == \
        "nice -n 19 podman run --rm computed/busybox:latest true"
    assert keys.prune() == []
    with db.session() as s:
        s.execute(update(Instance).values(state=State.TERMINATED))
    assert keys.prune() == [LEGACY_FILE] and not (directory / LEGACY_FILE).exists()


# -- the migration --------------------------------------------------------------------------

def test_migration_0010_up_and_down(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    Database(url).dispose()  # at the head
    engine = make_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))

    def columns() -> set[str]:
        return {c["name"] for c in inspect(engine).get_columns("instances")}

    try:
        assert {"ssh_host_key", "management_key_id"} <= columns()
        assert "management_keys" in inspect(engine).get_table_names()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0009")
        engine.dispose()
        assert not {"ssh_host_key", "management_key_id"} & columns()
        assert "management_keys" not in inspect(engine).get_table_names()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0010")
        engine.dispose()
        assert {"ssh_host_key", "management_key_id"} <= columns()
    finally:
        engine.dispose()


# -- the seed, the view ---------------------------------------------------------------------

def test_the_seed_holds_the_host_key_the_store_keeps_the_public_half(client, launch, wait, service, settings):
    inst = launch()["instances"][0]
    wait()
    shown = client.get(f"/v1/instances/{inst['id']}").get_json()["ssh"]
    seed = settings.instances_dir / inst["id"] / "seed.iso"
    vendor = yaml.safe_load(read_iso(seed, "vendor-data"))
    assert read_iso(seed, "vendor-data").startswith(b"#cloud-config\n")
    private = vendor["ssh_keys"]["ed25519_private"]
    public = vendor["ssh_keys"]["ed25519_public"]
    derived = paramiko.Ed25519Key.from_private_key(io.StringIO(private))
    assert public.split()[1] == derived.get_base64()
    with service.db.reading() as s:
        row = s.get(Instance, inst["id"])
    assert row.ssh_host_key == public == shown["host_key"]
    assert shown["host_key_fingerprints"] == [f"256 {ssh.fingerprint(public)} (ED25519)"]
    assert shown["known_hosts"] == f"[{shown['host']}]:{shown['port']} {public}"
    # the private half is in the seed alone: not in the store, not in the API
    body = private.splitlines()[1]
    stored = [getattr(row, c.key) for c in Instance.__table__.columns]
    assert not any(isinstance(v, (str, bytes)) and body in str(v) for v in stored)
    assert body not in client.get(f"/v1/instances/{inst['id']}").get_data(as_text=True)
    # the management key line in the seed is the host's current key, restricted
    meta = yaml.safe_load(read_iso(seed, "meta-data"))
    key = service.management_keys.current("local")
    assert row.management_key_id == key.id
    assert meta["public-keys"] == [authorized_line(key.public_openssh, "podman", "computed/busybox:latest")]
    # a second instance: a host key of its own
    other = launch()["instances"][0]
    wait()
    with service.db.reading() as s:
        assert s.get(Instance, other["id"]).ssh_host_key not in (None, public)


def test_new_guests_get_the_rotated_key(client, launch, wait, service, settings):
    first = launch()["instances"][0]
    wait()
    old = service.management_keys.current("local")
    new = service.management_keys.rotate("local")
    second = launch()["instances"][0]
    wait()
    with service.db.reading() as s:
        assert s.get(Instance, first["id"]).management_key_id == old.id
        assert s.get(Instance, second["id"]).management_key_id == new.id
    meta = yaml.safe_load(read_iso(settings.instances_dir / second["id"] / "seed.iso", "meta-data"))
    [line] = meta["public-keys"]
    assert line.endswith(new.public_openssh) and old.public_openssh not in line
    assert old.path.is_file()  # the first instance still has it
    assert client.delete(f"/v1/instances/{first['id']}").status_code == 202
    wait()
    service.management_keys.prune()
    assert not old.path.exists() and new.path.is_file()
