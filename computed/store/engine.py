"""The store's engine and sessions. SQLite (WAL, foreign keys, immediate write locks) by
default; any SQLAlchemy URL by setting (PostgreSQL is tested too). The schema is brought up
to date with Alembic.

Writing transactions run one at a time, as SQLite's BEGIN IMMEDIATE has it: the code checks
and then changes (an instance's state, a launch's limits) in one transaction. On
PostgreSQL a transaction-level advisory lock, taken at its start, does the same; reading
transactions there are REPEATABLE READ, READ ONLY: one snapshot, as in SQLite's WAL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
READ_ONLY = "computed_read_only"  # an execution option: a session that only reads
#: the key of PostgreSQL's advisory lock that writing transactions take (any fixed 64-bit number)
WRITER_LOCK = 0x636F6D7075746564  # "computed"


def shown_url(url: str) -> str:
    """URL as it may be printed or logged: its password masked (``***``). One that does
    not parse is shown by its scheme alone, as it might hold a password anywhere."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return f"{str(url).partition(':')[0]}:(a URL that does not parse)"


def private_sqlite_file(path: Path) -> None:
    """The store's file made (empty, a valid database) or kept, root's alone (0600) with
    its -wal and -shm, whatever the umask: SQLite gives those the database file's mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm", "-journal"):
        try:
            os.chmod(f"{path}{suffix}", 0o600)
        except FileNotFoundError:
            pass


def make_engine(url: str) -> Engine:
    try:
        make_url(url)
    except ArgumentError:  # SQLAlchemy's own words quote the URL, password and all
        raise ArgumentError(f"the database URL cannot be read: {shown_url(url)}") from None
    if url.startswith("sqlite"):
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            private_sqlite_file(Path(url.removeprefix("sqlite:///")))
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, record):
            dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself, below
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            # Take the write lock at the start: a transaction that reads and then writes
            # cannot fail half-way with "database is locked". Read-only sessions
            # (Database.reading) do not take it, so a long report never holds up writers.
            read_only = conn.get_execution_options().get(READ_ONLY, False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    postgresql = make_url(url).get_backend_name() == "postgresql"
    # PostgreSQL's writers read after taking the advisory lock, so they must see what the
    # writers before them committed: READ COMMITTED whatever the server's default (REPEATABLE
    # READ would fix the snapshot at the lock's own SELECT, before the lock is granted)
    engine = create_engine(url, pool_pre_ping=True, **({"isolation_level": "READ COMMITTED"} if postgresql else {}))
    if postgresql:

        @event.listens_for(engine, "begin")
        def _postgresql_begin(conn):
            # one writer at a time, as on SQLite; readers do not wait (see Database)
            if not conn.get_execution_options().get(READ_ONLY, False):
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITER_LOCK})")

    return engine


def upgrade(engine: Engine) -> None:
    """Apply every migration not yet applied (idempotent)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Database:
    def __init__(self, url: str):
        self.engine = make_engine(url)
        upgrade(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        readers = {READ_ONLY: True}
        if self.engine.dialect.name == "postgresql":  # a snapshot for the whole transaction
            readers |= {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        self._readers = sessionmaker(self.engine.execution_options(**readers), expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A transaction that only reads: one consistent snapshot, without SQLite's write lock."""
        with self._readers() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
