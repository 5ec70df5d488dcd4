"""A consistent copy of the store while the service runs (``computed backup PATH``).

SQLite only: the online backup API (``sqlite3.Connection.backup``) copies the store a few
pages at a time into a temporary file beside PATH, which is checked (``PRAGMA
integrity_check``), counted, made a plain single file (rollback journal, so it needs no
``-wal``/``-shm`` beside it), flushed to disk and then renamed to PATH, mode 0600: it holds
the sealed access key secrets and every account's data. Nothing else is copied: the key
that opens those secrets (``secrets/access-keys.key`` under the state directory) must be
kept separately.

The store runs in WAL mode, where readers never block writers. The copy reads from one
snapshot, held open for its whole length: every step copies pages of the same moment, so
writers carry on and the copy is a state of the store at a transaction boundary. (The
backup API's own way with a source changed by another connection is to start over, which
under steady writes might never finish.) A store in another journal mode is copied in
steps without that snapshot, the backup API restarting whenever a writer committed.

Any other database (PostgreSQL) is backed up with its own tools: ``pg_dump``."""

from __future__ import annotations

import os
import sqlite3
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .engine import shown_url

#: pages copied per step (4 MiB at SQLite's default 4 KiB page)
STEP_PAGES = 1024
#: the tables whose rows the result counts
COUNTED = ("instances", "usage_events", "accounts")


class BackupError(Exception):
    """A backup that cannot be made; the message says why and what to do."""


class NotSQLite(BackupError):
    """The store is not SQLite: its own tools back it up."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size: int
    #: table -> rows in the copy
    counts: dict[str, int]
    #: the copy's Alembic revision
    schema: str | None
    #: what ``PRAGMA integrity_check`` said of the copy ("ok")
    integrity: str


def sqlite_path(database_url: str) -> Path:
    """The file of an SQLite ``database_url``; NotSQLite for any other database."""
    try:
        url = make_url(database_url)
    except ArgumentError:  # its words quote the URL, password and all
        raise BackupError(f"the database URL cannot be read: {shown_url(database_url)}") from None
    if url.get_backend_name() != "sqlite":
        shown = url.render_as_string(hide_password=True)
        raise NotSQLite(f"the store is not SQLite but {url.get_backend_name()} ({shown}): back it up with the "
                        f"database's own tools, for PostgreSQL pg_dump (e.g. pg_dump --format=custom "
                        f"--file=computed.dump DBNAME) and pg_restore to restore it")
    if not url.database or url.database == ":memory:" or url.database.startswith("file::memory:"):
        raise BackupError("the store is an in-memory SQLite database: there is no file to back up")
    return Path(url.database)


def _connect_existing(path: Path) -> sqlite3.Connection:
    """PATH, opened for reading and writing but never created (a wrong path must not leave
    an empty store behind)."""
    uri = f"file:{urllib.request.pathname2url(str(path.absolute()))}?mode=rw"
    try:
        con = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False)
    except sqlite3.OperationalError as e:
        raise BackupError(f"cannot open the store {path}: {e}") from None
    con.execute("PRAGMA busy_timeout=30000")
    return con


def backup(database_url: str, dest: Path, force: bool = False, pages: int = STEP_PAGES,
           progress: Callable[[int, int], None] | None = None) -> BackupResult:
    """Copy the store of DATABASE_URL to DEST (see the module's doc). An existing DEST is
    refused unless FORCE. PROGRESS(remaining, total) is called after each step of PAGES
    pages."""
    source = sqlite_path(database_url)
    dest = Path(dest).absolute()
    if not source.is_file():
        raise BackupError(f"there is no store at {source} (nothing to back up)")
    if dest.is_dir():
        raise BackupError(f"{dest} is a directory: give the backup file's path, e.g. {dest / 'computed.db'}")
    if not dest.parent.is_dir():
        raise BackupError(f"the directory {dest.parent} does not exist")
    if dest.exists():
        if not force:
            raise BackupError(f"{dest} already exists: give another path, or --force to replace it")
        if dest.samefile(source):
            raise BackupError(f"{dest} is the store itself")
    for suffix in ("-wal", "-shm", "-journal"):
        if Path(f"{source}{suffix}").absolute() == dest:
            raise BackupError(f"{dest} is one of the store's own files")

    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")  # mode 0600
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _copy(source, tmp, pages, progress)
        result = _check(tmp)
        os.chmod(tmp, 0o600)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        _move_into_place(tmp, dest, force)
    except BaseException:
        for leftover in (tmp, Path(f"{tmp}-journal"), Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)
        raise
    return BackupResult(dest, dest.stat().st_size, *result)


def _copy(source: Path, tmp: Path, pages: int, progress: Callable[[int, int], None] | None) -> None:
    src = _connect_existing(source)
    dst = sqlite3.connect(tmp, isolation_level=None)
    try:
        snapshot = src.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        if snapshot:
            # one read transaction for the whole copy: every step reads the same snapshot
            src.execute("BEGIN")
            src.execute("SELECT count(*) FROM sqlite_schema").fetchone()

        def step(status: int, remaining: int, total: int) -> None:
            if progress is not None:
                progress(remaining, total)

        try:
            src.backup(dst, pages=max(1, pages), progress=step)
        except sqlite3.Error as e:
            raise BackupError(f"copying the store failed: {e}") from None
        finally:
            if snapshot:
                src.execute("COMMIT")
        # a plain single file: no -wal/-shm needed to read it (the service sets WAL again)
        dst.execute("PRAGMA journal_mode=DELETE").fetchone()
    finally:
        dst.close()
        src.close()


def _check(path: Path) -> tuple[dict[str, int], str | None, str]:
    con = sqlite3.connect(path, isolation_level=None)
    try:
        problems = [row[0] for row in con.execute("PRAGMA integrity_check")]
        integrity = "ok" if problems == ["ok"] else "; ".join(problems[:5])
        if integrity != "ok":
            raise BackupError(f"the copy failed its integrity check: {integrity}")
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
        counts = {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in COUNTED if t in tables}
        schema = (con.execute("SELECT version_num FROM alembic_version").fetchone() or [None])[0] \
            if "alembic_version" in tables else None
    finally:
        con.close()
    return counts, schema, integrity


def _move_into_place(tmp: Path, dest: Path, force: bool) -> None:
    if force:
        os.replace(tmp, dest)
    else:
        try:
            os.link(tmp, dest)  # fails if DEST appeared meanwhile: never overwrites
        except FileExistsError:
            raise BackupError(f"{dest} already exists: give another path, or --force to replace it") from None
        except OSError:  # a file system without hard links
            if dest.exists():
                raise BackupError(f"{dest} already exists: give another path, or --force to replace it") from None
            os.replace(tmp, dest)
        else:
            tmp.unlink()
    dir_fd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
