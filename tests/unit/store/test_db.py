"""The store: schema upgrades with Alembic, SQLite pragmas, and aware UTC datetimes. A test
that takes ``store_url`` runs on SQLite and on PostgreSQL (its ``pg`` variant)."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import exc, inspect, select, text
from sqlalchemy.orm import Session

from computed.store.engine import MIGRATIONS, Database, make_engine
from computed.store.models import Instance, KeyPair, Tag, UtcDateTime

EXPECTED_TABLES = {"accounts", "access_keys", "alembic_version", "budgets", "budget_events", "console_sessions", "hosts", "host_images", "management_keys", "service_processes", "instances", "key_pairs", "port_forwards", "tags", "usage_events"}


_SCRIPTS = Config()
_SCRIPTS.set_main_option("script_location", str(MIGRATIONS))
#: the newest revision (Alembic's head)
HEAD = ScriptDirectory.from_config(_SCRIPTS).get_current_head()


def raw(path, sql):
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


@pytest.mark.sqlite_only
def test_upgrade_once_and_idempotent(tmp_path):
    path = tmp_path / "nested" / "dir" / "computed.db"  # the parent is created
    url = f"sqlite:///{path}"
    first = Database(url)
    with first.session() as s:
        s.add(KeyPair(name="kept", key_type="ssh-ed25519", public_key="ssh-ed25519 AAAA", fingerprint="SHA256:x"))
    first.dispose()
    assert raw(path, "SELECT version_num FROM alembic_version") == [(HEAD,)]

    second = Database(url)  # upgrades nothing: same version, data intact
    try:
        assert raw(path, "SELECT version_num FROM alembic_version") == [(HEAD,)]
        tables = {name for (name,) in raw(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == EXPECTED_TABLES
        with second.session() as s:
            assert [k.name for k in s.scalars(select(KeyPair))] == ["kept"]
    finally:
        second.dispose()


def test_upgrade_on_either_store(store_url):
    """The migrations make the same tables on SQLite and PostgreSQL, once."""
    first = Database(store_url)
    with first.session() as s:
        s.add(KeyPair(name="kept", key_type="ssh-ed25519", public_key="ssh-ed25519 AAAA", fingerprint="SHA256:x"))
    first.dispose()
    second = Database(store_url)  # upgrades nothing: same version, data intact
    try:
        with second.reading() as s:
            assert s.scalars(text("SELECT version_num FROM alembic_version")).all() == [HEAD]
            assert [k.name for k in s.scalars(select(KeyPair))] == ["kept"]
        assert set(inspect(second.engine).get_table_names()) == EXPECTED_TABLES
    finally:
        second.dispose()


@pytest.mark.sqlite_only
def test_sqlite_pragmas(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert raw(tmp_path / "c.db", "PRAGMA journal_mode") == [("wal",)]  # WAL is a property of the file
    finally:
        db.dispose()


def test_session_rolls_back_on_error(store_url):
    db = Database(store_url)
    try:
        with pytest.raises(RuntimeError), db.session() as s:
            s.add(KeyPair(name="gone", key_type="t", public_key="p", fingerprint="f"))
            s.flush()
            raise RuntimeError("abort")
        with db.session() as s:
            assert s.scalars(select(KeyPair)).all() == []
    finally:
        db.dispose()


def test_writers_take_turns_and_readers_do_not_wait(store_url):
    """A writing transaction runs alone (the code checks, then changes); one that reads sees
    one snapshot and waits for no writer."""
    db = Database(store_url)
    entered = threading.Event()

    def second_writer():
        with db.session() as s:
            s.add(KeyPair(name="second", key_type="t", public_key="p", fingerprint="f"))
            s.flush()  # the transaction begins at its first statement
            entered.set()

    try:
        with db.reading() as reader:
            assert reader.scalars(select(KeyPair.name)).all() == []
            with db.session() as s:
                s.add(KeyPair(name="first", key_type="t", public_key="p", fingerprint="f"))
                s.flush()
                thread = threading.Thread(target=second_writer)
                thread.start()
                assert not entered.wait(0.5), "a second writer got in while the first was open"
                with db.reading() as other:  # a reader does not wait for the writer
                    assert other.scalars(select(KeyPair.name)).all() == []
            assert entered.wait(10), "the second writer did not get in after the first"
            thread.join(10)
            assert reader.scalars(select(KeyPair.name)).all() == []  # still its snapshot
        with db.reading() as s:
            assert sorted(s.scalars(select(KeyPair.name))) == ["first", "second"]
    finally:
        db.dispose()


def instance_values(**changes) -> dict:
    return {"id": "i-0123456789abcdef0", "reservation_id": "r-0123456789abcdef0", "state": "pending",
            "size": "t3.micro", "vcpus": 2, "memory_mib": 1024, "disk_gib": 8, "price_per_hour": "0.0104",
            "currency": "USD", "image": "img", "image_version": "1", "image_path": "/x",
            "host_uri": "test:///default", "domain_name": "computed-x"} | changes


def instance(**changes) -> Instance:
    return Instance(**instance_values(**changes))


def test_deleting_an_instance_deletes_its_tags(store_url):
    db = Database(store_url)
    try:
        with db.session() as s:
            s.add(instance(tags=[Tag(key="a", value="1"), Tag(key="b", value="2")]))
        with db.session() as s:
            s.execute(text("DELETE FROM instances"))  # a bulk delete, as the purge does
        with db.session() as s:
            assert s.scalars(select(Tag)).all() == []
    finally:
        db.dispose()


def test_a_client_token_names_one_launch(store_url):
    """0004: (owner, client_token, launch_index) is unique; launches that raced for one
    token before it keep their instances, and one reservation (the lowest id) the token."""
    url = store_url
    engine = make_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
    with Session(engine) as s, s.begin():
        for n, (owner, reservation, index) in enumerate([("a", "r-2", 0), ("a", "r-1", 0), ("a", "r-1", 1),
                                                         ("a", "r-3", 2), ("b", "r-4", 0)]):
            # the columns of 0003's table only (the model has later ones)
            s.execute(Instance.__table__.insert().values(instance_values(
                id=f"i-{n}", reservation_id=reservation, owner=owner, launch_index=index, client_token="tok",
                state_changed_at=dt.datetime.now(dt.UTC), launch_time=dt.datetime.now(dt.UTC), ready_ssh=False,
                ready_engine=False)))
    engine.dispose()
    db = Database(url)
    try:
        with db.reading() as s:
            tokens = {i.id: i.client_token for i in s.scalars(select(Instance))}
        assert tokens == {"i-0": None, "i-1": "tok", "i-2": "tok", "i-3": None, "i-4": "tok"}
        with pytest.raises(exc.IntegrityError), db.session() as s:
            s.add(instance(id="i-5", owner="a", launch_index=1, client_token="tok"))
        with db.session() as s:  # no token, or another index, is no conflict
            s.add(instance(id="i-6", owner="a", launch_index=1))
            s.add(instance(id="i-7", owner="a", launch_index=1))
            s.add(instance(id="i-8", owner="a", launch_index=2, client_token="tok"))
    finally:
        db.dispose()


class TestUtcDateTime:
    def test_naive_datetimes_are_refused(self, store_url):
        db = Database(store_url)
        try:
            with pytest.raises(exc.StatementError) as excinfo, db.session() as s:
                s.add(KeyPair(name="n", key_type="t", public_key="p", fingerprint="f",
                              created_at=dt.datetime(2024, 1, 1, 12, 0)))
            assert isinstance(excinfo.value.orig, ValueError)
            assert "naive" in str(excinfo.value.orig)
            with db.session() as s:
                assert s.scalars(select(KeyPair)).all() == []
        finally:
            db.dispose()

    def test_aware_in_aware_utc_out(self, store_url, tmp_path):
        db = Database(store_url)
        plus_two = dt.timezone(dt.timedelta(hours=2))
        when = dt.datetime(2024, 6, 1, 14, 30, 15, 123456, tzinfo=plus_two)
        try:
            with db.session() as s:
                s.add(KeyPair(name="n", key_type="t", public_key="p", fingerprint="f", created_at=when))
            db.dispose()  # a fresh connection: what comes back is what was stored
            with db.session() as s:
                got = s.scalar(select(KeyPair.created_at))
            assert got == when
            assert got.tzinfo == dt.UTC and got.utcoffset() == dt.timedelta(0)
            assert (got.hour, got.minute) == (12, 30)
            if db.engine.dialect.name == "sqlite":  # stored as naive UTC text
                assert raw(tmp_path / "c.db", "SELECT created_at FROM key_pairs")[0][0].startswith("2024-06-01 12:30:15")
            else:  # a timestamptz, whatever the session's time zone
                with db.session() as s:
                    s.execute(text("SET LOCAL TIME ZONE 'Asia/Tokyo'"))
                    assert s.scalar(text("SELECT created_at AT TIME ZONE 'UTC' FROM key_pairs")) == \
                        dt.datetime(2024, 6, 1, 12, 30, 15, 123456)
                    got = s.scalar(select(KeyPair.created_at))
                    assert got == when and got.tzinfo is dt.UTC
            # comparisons in SQL are between UTC values
            with db.session() as s:
                cutoff = dt.datetime(2024, 6, 1, 13, 0, tzinfo=plus_two)  # 11:00 UTC
                assert s.scalar(select(KeyPair.name).where(KeyPair.created_at > cutoff)) == "n"
        finally:
            db.dispose()

    def test_default_is_now_in_utc(self, store_url):
        db = Database(store_url)
        try:
            before = dt.datetime.now(dt.UTC)
            with db.session() as s:
                s.add(KeyPair(name="n", key_type="t", public_key="p", fingerprint="f"))
            with db.session() as s:
                got = s.scalar(select(KeyPair.created_at))
            assert got.tzinfo == dt.UTC and before <= got <= dt.datetime.now(dt.UTC)
        finally:
            db.dispose()

    def test_type_directly(self):
        from sqlalchemy.dialects import postgresql, sqlite
        t = UtcDateTime()
        aware = dt.datetime(2024, 1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))
        assert t.process_bind_param(aware, sqlite.dialect()) == dt.datetime(2024, 1, 1, 0)
        assert t.process_bind_param(aware, postgresql.dialect()) == dt.datetime(2024, 1, 1, 0, tzinfo=dt.UTC)
        assert t.process_bind_param(None, sqlite.dialect()) is None
        with pytest.raises(ValueError):
            t.process_bind_param(dt.datetime(2024, 1, 1), sqlite.dialect())
        back = t.process_result_value(dt.datetime(2024, 1, 1), sqlite.dialect())
        assert back == dt.datetime(2024, 1, 1, tzinfo=dt.UTC) and back.tzinfo == dt.UTC
        assert t.process_result_value(None, sqlite.dialect()) is None
        tokyo = dt.datetime(2024, 1, 1, 9, tzinfo=dt.timezone(dt.timedelta(hours=9)))  # a session's time zone
        back = t.process_result_value(tokyo, postgresql.dialect())
        assert back == dt.datetime(2024, 1, 1, 0, tzinfo=dt.UTC) and back.tzinfo is dt.UTC


def test_access_key_status_and_last_use_up_and_down(store_url):
    """0011: access keys gain a status (Active for those there are), a last use (none yet);
    going back down drops them, with the inactive keys (they must not come back to life on
    a schema without status) and the console logins."""
    from alembic.script import ScriptDirectory

    from computed.store.models import AccessKey, ConsoleSession

    engine = make_engine(store_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    before = ScriptDirectory.from_config(cfg).get_revision("0011").down_revision
    now = dt.datetime(2026, 3, 1, tzinfo=dt.UTC).replace(tzinfo=None)

    def migrate(step, target):
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            step(cfg, target)

    def columns():
        return {c["name"] for c in inspect(engine).get_columns("access_keys")}

    migrate(command.upgrade, before)
    with engine.begin() as conn:  # the columns of the schema before 0011 only
        conn.execute(text("INSERT INTO accounts (id, name, admin, created_at) VALUES ('123456789012', 'a', false, :t)"),
                     {"t": now})
        for key in ("AKCD" + "A" * 16, "AKCD" + "B" * 16):
            conn.execute(text("INSERT INTO access_keys (id, account_id, sealed_secret, created_at) "
                              "VALUES (:id, '123456789012', :s, :t)"), {"id": key, "s": b"sealed", "t": now})
            conn.execute(text("INSERT INTO console_sessions (id, access_key_id, created_at, expires_at) "
                              "VALUES (:id, :key, :t, :t)"), {"id": key.lower()[:32], "key": key, "t": now})
    assert not {"status", "last_used_at", "last_used_service"} & columns()
    migrate(command.upgrade, "0011")
    assert {"status", "last_used_at", "last_used_service"} <= columns()
    with Session(engine) as s, s.begin():
        rows = {k.id: (k.status, k.last_used_at, k.last_used_service) for k in s.scalars(select(AccessKey))}
        assert rows == {"AKCD" + "A" * 16: ("Active", None, None), "AKCD" + "B" * 16: ("Active", None, None)}
        s.get(AccessKey, "AKCD" + "B" * 16).status = "Inactive"
        assert len(s.scalars(select(ConsoleSession)).all()) == 2  # kept on the way up
    migrate(command.downgrade, before)
    assert not {"status", "last_used_at", "last_used_service"} & columns()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id FROM access_keys")).scalars().all() == ["AKCD" + "A" * 16]
        assert conn.execute(text("SELECT count(*) FROM console_sessions")).scalar() == 0
    migrate(command.upgrade, "head")
    assert {"status", "last_used_at", "last_used_service"} <= columns()
    engine.dispose()


def test_old_failure_reasons_are_split_into_message_and_detail(store_url):
    """0012: a reason written before, with an error's words in its message, keeps them
    as the admin's detail; tenants get a generic message. A boot failure's stays as it was."""
    engine = make_engine(store_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0011")
    raw = "launch failed: creating the instance's disk failed: qemu-img: /srv/i-0/disk.qcow2: Permission denied"
    boot = "launch failed: no SSH login within 600 s of the first boot"
    rows = {"i-0": ("Server.InternalError", raw), "i-1": ("Server.BootFailure", boot),
            "i-2": ("Client.UserInitiatedShutdown", "User initiated shutdown")}
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("instances")}
        for iid, (code, message) in rows.items():
            values = instance_values(id=iid, state="terminated", state_reason_code=code, state_reason_message=message,
                                     state_changed_at=now, launch_time=now, ready_ssh=False, ready_engine=False)
            conn.execute(Instance.__table__.insert().values({k: v for k, v in values.items() if k in columns}))
    engine.dispose()
    db = Database(store_url)
    try:
        with db.reading() as s:
            got = {i.id: (i.state_reason_message, i.state_reason_detail) for i in s.scalars(select(Instance))}
        assert got == {"i-0": ("the launch failed (an admin sees the detail)", raw), "i-1": (boot, None),
                       "i-2": ("User initiated shutdown", None)}
    finally:
        db.dispose()
