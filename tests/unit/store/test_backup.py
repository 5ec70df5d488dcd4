"""``computed backup``: a consistent copy of the SQLite store while writers keep writing
(the online backup API, in steps, from one snapshot), checked and counted, 0600, never
over an existing file unless --force; PostgreSQL is pg_dump's job; and a restore as the
README tells it (the copy plus the key file) opens the access keys' secrets."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
import stat
import threading

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from computed.accounts.registry import KEY_FILE, Accounts
from computed.store.backup import BackupError, NotSQLite, backup, sqlite_path
from computed.cli import cli
from computed.store.engine import Database
from computed.store.models import Instance, UsageEvent
from computed.accounts.secret_box import SecretBox

#: the writer's transactions: one instance and EVENTS usage events each
EVENTS = 5
T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def instance(n: int) -> Instance:
    return Instance(id=f"i-{n:017x}", reservation_id=f"r-{n:017x}", owner="default", state="pending",
                    size="t3.nano", vcpus=2, memory_mib=512, disk_gib=8, price_per_hour="0.0052", currency="USD",
                    image="debian-12-podman", image_version="1.0.0", image_path="/nowhere", host_uri="test:///default",
                    domain_name=f"computed-i-{n:017x}", ssh_host="127.0.0.1", ssh_port=None,
                    launch_time=T0, state_changed_at=T0)


def write_batch(db: Database, n: int) -> None:
    """One transaction: instance N and its EVENTS usage events (with some bulk, so the store
    takes many backup steps)."""
    with db.session() as s:
        inst = instance(n)
        s.add(inst)
        for k in range(EVENTS):
            s.add(UsageEvent(instance_id=inst.id, owner="default", size="t3.nano", image="debian-12-podman",
                             price_per_hour="0.0052", currency="USD", state="pending" if k == 0 else "running",
                             at=T0 + dt.timedelta(seconds=k), tags='{"pad": "' + "x" * 400 + '"}'))


def counts(url: str) -> tuple[int, int]:
    db = Database(url)
    try:
        with db.reading() as s:
            return (s.scalar(select(func.count()).select_from(Instance)),
                    s.scalar(select(func.count()).select_from(UsageEvent)))
    finally:
        db.dispose()


def alembic_head(url: str) -> str:
    con = sqlite3.connect(sqlite_path(url))
    try:
        return con.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    finally:
        con.close()


def test_a_backup_taken_while_writers_write_is_a_consistent_prefix(tmp_path):
    url = f"sqlite:///{tmp_path / 'store' / 'computed.db'}"
    db = Database(url)
    for n in range(400):  # ~1 MiB: a few hundred pages, copied 8 at a time
        write_batch(db, n)
    head = alembic_head(url)
    written = [400]
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer():
        try:
            while not stop.is_set():
                write_batch(db, written[0])
                written[0] += 1
        except BaseException as e:  # noqa: BLE001 (reported by the test)
            errors.append(e)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    steps = []

    def progress(remaining: int, total: int) -> None:
        # give the writer time to commit between steps: the copy must not see any of it half
        steps.append((remaining, total))
        seen = written[0]
        for _ in range(200):
            if written[0] > seen + 1:
                break
            threading.Event().wait(0.002)

    before = written[0]
    dest = tmp_path / "backups" / "computed.db"
    dest.parent.mkdir()
    try:
        result = backup(url, dest, pages=8, progress=progress)
    finally:
        stop.set()
        thread.join(timeout=30)
    after = written[0]
    assert not errors, errors
    assert len(steps) > 10, "the copy went in steps"
    assert after - before > len(steps), "the writer committed while the copy was being made"

    assert result.path == dest and result.size == dest.stat().st_size
    assert result.integrity == "ok"
    copied_instances, copied_events = result.counts["instances"], result.counts["usage_events"]
    # a transaction boundary: whole batches only, and every batch before the copy started
    assert copied_events == EVENTS * copied_instances
    assert before <= copied_instances <= after
    assert result.schema == head

    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert sorted(p.name for p in dest.parent.iterdir()) == ["computed.db"], "nothing but the copy, no temp file"
    con = sqlite3.connect(dest)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete", "a single file, no -wal needed"
    con.close()
    # the service opens it: migrations at head, nothing to apply
    assert counts(f"sqlite:///{dest}") == (copied_instances, copied_events)
    assert alembic_head(f"sqlite:///{dest}") == head
    # the store itself was never blocked for good: it still takes writes
    write_batch(db, 10**6)
    db.dispose()


def test_backup_refuses_to_overwrite_and_other_stores(tmp_path):
    url = f"sqlite:///{tmp_path / 'computed.db'}"
    Database(url).dispose()
    dest = tmp_path / "copy.db"
    dest.write_text("precious")
    with pytest.raises(BackupError, match="already exists"):
        backup(url, dest)
    assert dest.read_text() == "precious"
    assert backup(url, dest, force=True).integrity == "ok"
    with pytest.raises(BackupError, match="the store itself"):
        backup(url, tmp_path / "computed.db", force=True)
    with pytest.raises(BackupError, match="no store at"):
        backup(f"sqlite:///{tmp_path / 'missing.db'}", tmp_path / "x.db")
    assert not (tmp_path / "missing.db").exists(), "a wrong path makes no empty store"
    with pytest.raises(BackupError, match="is a directory"):
        backup(url, tmp_path)
    with pytest.raises(NotSQLite, match="pg_dump") as e:
        backup("postgresql+psycopg://computed:hunter2@db.example/computed", tmp_path / "pg.db")
    assert "hunter2" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["computed.db", "copy.db"]


# -- the command -------------------------------------------------------------------------

@pytest.fixture
def env(tmp_path) -> dict[str, str | None]:
    base: dict[str, str | None] = {k: None for k in os.environ if k.startswith("COMPUTED_")}
    return base | {"COMPUTED_VAR_DIR": str(tmp_path / "var"), "COMPUTED_CONFIG": None}


def test_the_backup_command_and_a_restore(tmp_path, env):
    var = tmp_path / "var"
    db = Database(f"sqlite:///{var / 'computed.db'}")
    accounts = Accounts(db, SecretBox(var / KEY_FILE))
    alice = accounts.create("alice")
    accounts.create("bob")
    for n in range(3):
        write_batch(db, n)

    runner = CliRunner()
    dest = tmp_path / "backups" / "computed-backup.db"
    dest.parent.mkdir()
    done = runner.invoke(cli, ["backup", str(dest)], env=env)
    assert done.exit_code == 0, done.output
    assert f"wrote {dest} (" in done.output
    assert "3 instances, 15 usage events, 2 accounts; integrity check: ok" in done.output
    assert "access-keys.key" in done.output
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert [p.name for p in dest.parent.iterdir()] == ["computed-backup.db"]

    write_batch(db, 3)
    again = runner.invoke(cli, ["backup", str(dest)], env=env)
    assert again.exit_code == 1 and "already exists" in again.output and "--force" in again.output
    forced = runner.invoke(cli, ["backup", "--force", str(dest)], env=env)
    assert forced.exit_code == 0, forced.output
    assert "4 instances, 20 usage events, 2 accounts" in forced.output
    db.dispose()

    # restore, as the README says: the copy as computed.store.engine (no stale -wal/-shm), and the key file
    restored = tmp_path / "restored"
    (restored / KEY_FILE).parent.mkdir(parents=True)
    shutil.copy2(dest, restored / "computed.db")
    shutil.copy2(var / KEY_FILE, restored / KEY_FILE)
    db = Database(f"sqlite:///{restored / 'computed.db'}")
    found = Accounts(db, SecretBox(restored / KEY_FILE)).lookup(alice.access_key_id)
    assert found is not None and found[1] == alice.secret_access_key
    db.dispose()


def test_the_backup_command_on_postgresql_points_to_pg_dump(tmp_path, env):
    done = CliRunner().invoke(cli, ["backup", str(tmp_path / "x.db")],
                              env=env | {"COMPUTED_DATABASE_URL": "postgresql+psycopg://u:s3cret@localhost/computed"})
    assert done.exit_code == 1
    assert "pg_dump" in done.output and "s3cret" not in done.output
    assert not (tmp_path / "x.db").exists()


def test_the_backup_command_without_a_store(tmp_path, env):
    done = CliRunner().invoke(cli, ["backup", str(tmp_path / "x.db")], env=env)
    assert done.exit_code == 1 and "no store at" in done.output
    assert not (tmp_path / "var" / "computed.db").exists()
