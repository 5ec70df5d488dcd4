"""Issue 17, finding 5: every file the service writes is readable by root and, where QEMU
opens it, QEMU's group only, whatever the umask; and serve refuses to start when QEMU's user
cannot reach the instances directory. The files are made through the real code paths
(a launch on libvirt's test driver, the service's start) and their modes read back."""

from __future__ import annotations

import grp
import os
import stat
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from computed.cli import cli
from computed.settings import Settings
from computed.virt import file_access, local_host

QEMU = file_access.qemu_user()
needs_qemu_user = pytest.mark.skipif(QEMU is None, reason="no libvirt-qemu or qemu user on this machine")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def group(path: Path) -> str:
    return grp.getgrgid(os.stat(path).st_gid).gr_name


@pytest.fixture(params=[0o022, 0o000], ids=["umask-022", "umask-000"])
def permissive_umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


@needs_qemu_user
@pytest.mark.sqlite_only
def test_launched_instance_files_are_private(permissive_umask, make_app, settings, launch, wait):
    app = make_app()
    service = app.extensions["computed"]
    iid = launch(user_data="#cloud-config\npassword: secret\n")["instances"][0]["id"]
    wait()
    files = service.provisioner.files(iid)
    assert files.disk.is_file() and files.seed.is_file() and files.console.is_file()
    # QEMU walks through; no other user lists a directory or reads a file
    for d in (settings.var_dir, settings.instances_dir, files.root):
        assert (mode(d), group(d)) == (0o750, QEMU.group), d
    assert (mode(files.disk), group(files.disk)) == (0o660, QEMU.group)  # QEMU writes it
    assert (mode(files.seed), group(files.seed)) == (0o640, QEMU.group)  # the user data: QEMU reads it
    assert mode(files.console) == 0o600  # virtlogd (root) writes it
    # the store and its WAL files, the access keys' secret, the management key
    db = settings.var_dir / "computed.db"
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        assert mode(path) == 0o600, path
    assert mode(settings.var_dir / "secrets") == 0o700
    assert mode(settings.var_dir / "secrets" / "access-keys.key") == 0o600
    key = service.management_keys.current("local")
    assert mode(key.path.parent) == 0o700 and mode(service.management_keys.dir) == 0o700
    assert mode(key.path) == 0o600
    for p in settings.var_dir.rglob("*"):  # nothing of the state directory is world-readable
        if p.is_relative_to(settings.image_library):
            continue  # the images: public, read-only bases
        assert mode(p) & 0o007 == 0, p


@pytest.mark.sqlite_only
def test_first_admins_credentials_are_private(permissive_umask, tmp_path):
    from computed.accounts.registry import Accounts
    from computed.accounts.secret_box import SecretBox
    from computed.store.engine import Database
    db = Database(f"sqlite:///{tmp_path / 'computed.db'}")
    try:
        Accounts(db, SecretBox(tmp_path / "secrets" / "k")).bootstrap(tmp_path / "admin-credentials.json")
    finally:
        db.dispose()
    assert mode(tmp_path / "admin-credentials.json") == 0o600
    assert mode(tmp_path / "secrets") == 0o700


@pytest.mark.sqlite_only
def test_existing_store_and_config_are_made_private(permissive_umask, tmp_path):
    (tmp_path / "computed.toml").write_text("[database]\n")
    (tmp_path / "computed.db").write_bytes(b"")
    os.chmod(tmp_path / "computed.db", 0o644)
    os.chmod(tmp_path / "computed.toml", 0o644)
    from computed.store.engine import private_sqlite_file
    private_sqlite_file(tmp_path / "computed.db")
    file_access.prepare_state(tmp_path, tmp_path / "instances", QEMU)
    assert mode(tmp_path / "computed.db") == 0o600
    assert mode(tmp_path / "computed.toml") == 0o600  # it may hold the database's password
    assert mode(tmp_path / "instances") == 0o750


@needs_qemu_user
def test_instances_made_before_are_made_private(tmp_path):
    old = tmp_path / "instances" / "i-0123456789abcdef0"
    old.mkdir(parents=True)
    for name in ("disk.qcow2", "seed.iso", "console.log", "console.log.0"):
        (old / name).write_bytes(b"x")
        os.chmod(old / name, 0o644)
    os.chmod(old, 0o755)
    file_access.prepare_state(tmp_path, tmp_path / "instances", QEMU)
    assert (mode(old), group(old)) == (0o750, QEMU.group)
    assert (mode(old / "disk.qcow2"), group(old / "disk.qcow2")) == (0o660, QEMU.group)
    assert (mode(old / "seed.iso"), group(old / "seed.iso")) == (0o640, QEMU.group)
    assert mode(old / "console.log") == mode(old / "console.log.0") == 0o600


def test_state_dir_is_private_when_qemu_needs_nothing_in_it(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    file_access.prepare_state(tmp_path / "var", elsewhere / "instances", QEMU, image_library=elsewhere / "images")
    assert mode(tmp_path / "var") == 0o700


def test_seed_is_private_whatever_the_umask(permissive_umask, tmp_path):
    from computed.virt.cloudinit import write_seed
    assert mode(write_seed(tmp_path / "seed.iso", "instance-id: i-1\n", b"secret")) == 0o600


def test_qemu_user_from_qemu_conf_and_settings(tmp_path):
    conf = tmp_path / "qemu.conf"
    conf.write_text('#user = "nobody"\nuser = "root"   # as root\ngroup = "+0"\n')
    who = file_access.qemu_user(qemu_conf=conf)
    assert (who.user, who.uid, who.group, who.gid) == ("root", 0, "root", 0)
    nobody = file_access.qemu_user("nobody", qemu_conf=conf)  # the setting wins
    assert nobody.user == "nobody" and nobody.uid != 0
    assert file_access.qemu_user("no-such-user-here", qemu_conf=conf) is None
    conf.write_text("")
    assert file_access.qemu_user(qemu_conf=conf) == QEMU  # libvirt-qemu, else qemu


@pytest.fixture
def reachable_root():
    """A directory QEMU's user can reach (pytest's own are 0700 under /tmp/pytest-of-root)."""
    import shutil
    path = Path(tempfile.mkdtemp(prefix="computed-reach-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@needs_qemu_user
def test_reach_problems_name_the_closed_parent(reachable_root):
    closed = reachable_root / "closed"
    (closed / "var" / "instances").mkdir(parents=True)
    closed.chmod(0o700)
    problems = file_access.reach_problems(closed / "var" / "instances", QEMU)
    assert len(problems) == 1
    assert str(closed) in problems[0] and "chmod o+x" in problems[0] and QEMU.user in problems[0]
    closed.chmod(0o710)  # root's group, which QEMU is not in
    assert file_access.reach_problems(closed / "var" / "instances", QEMU)
    os.chown(closed, -1, QEMU.gid)
    assert file_access.reach_problems(closed / "var" / "instances", QEMU) == []
    closed.chmod(0o701)  # QEMU's group, as the kernel reads it: the group's bits, not the rest's
    assert file_access.reach_problems(closed / "var" / "instances", QEMU)
    os.chown(closed, -1, 0)
    assert file_access.reach_problems(closed / "var" / "instances", QEMU) == []
    assert file_access.reach_problems(reachable_root / "not-yet" / "instances", QEMU) == []


def local_settings(var: Path, **changes) -> Settings:
    return Settings.load({"COMPUTED_VAR_DIR": str(var)}, libvirt_uri="qemu:///system", **changes)


@needs_qemu_user
def test_serve_refuses_a_state_directory_qemu_cannot_reach(reachable_root, tmp_path):
    closed = reachable_root / "closed"
    var = closed / "var"
    var.mkdir(parents=True)
    closed.chmod(0o700)  # as mktemp -d makes it
    settings = local_settings(var, image_library=reachable_root / "images")
    found = local_host.problems(settings)
    assert len(found) == 1 and str(closed) in found[0], found
    result = CliRunner(env={"COMPUTED_VAR_DIR": str(var), "COMPUTED_LIBVIRT_URI": "qemu:///system",
                            "COMPUTED_IMAGE_STORE": str(reachable_root / "images"), "COMPUTED_CONFIG": None}
                       ).invoke(cli, ["serve", "--port", "1"])
    assert result.exit_code != 0
    assert str(closed) in result.output and "cannot be entered by QEMU's user" in result.output
    assert not (var / "computed.db").exists()  # refused before anything started

    # the state directory itself, made 0700 by mktemp -d, is the service's: it opens it
    closed.chmod(0o755)
    var.chmod(0o700)
    assert local_host.problems(settings) == []
    assert (mode(var), group(var)) == (0o750, QEMU.group)
    # another libvirt than this machine's system one: nothing to check here
    assert local_host.problems(settings.replace(libvirt_uri="qemu+ssh://root@elsewhere/system")) == []
    assert local_host.problems(settings.replace(libvirt_uri="test:///default")) == []
