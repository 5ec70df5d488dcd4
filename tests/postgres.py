"""A throwaway PostgreSQL server for the test session, and a fresh database per test.

The server is Debian's (``/usr/lib/postgresql/<version>/bin``, from the ``postgresql``
package that scripts/setup installs), run from a temporary data directory on a free
loopback port with trust authentication and without fsync (nothing in it outlives the
session). initdb and pg_ctl refuse to run as root: as root, they run as the ``postgres``
system user, which owns the directory.

Where PostgreSQL is not installed, the tests that need it are skipped, except in CI (the
``CI`` environment variable set), where that is a failure: CI must run them.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

#: the store's databases, as fixture parameters: a test that uses ``store_backend`` (or a
#: fixture that does: ``store_url``, the API's ``settings``) runs on each; the PostgreSQL
#: variant is marked ``postgresql`` (``-m "not postgresql"`` leaves them out)
BACKENDS = [pytest.param("sqlite", id="sqlite"),
            pytest.param("postgresql", id="pg", marks=pytest.mark.postgresql)]

USER = "postgres"  # the superuser initdb makes, and (as root) the system user that runs the server
TEMPLATE = "computed_template"  # a database migrated to the head once; each test's copies it


class Unavailable(Exception):
    """PostgreSQL cannot run here (not installed, or no postgres user to run it as root)."""


def find_bindir() -> Path:
    """The bin directory of the newest PostgreSQL installed (COMPUTED_TEST_PG_BINDIR if set)."""
    if os.environ.get("COMPUTED_TEST_PG_BINDIR"):
        candidates = [Path(os.environ["COMPUTED_TEST_PG_BINDIR"])]
    else:
        candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                            key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)], reverse=True)
        on_path = shutil.which("initdb")
        if on_path:
            candidates.append(Path(on_path).parent)
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    raise Unavailable("PostgreSQL is not installed (no initdb/pg_ctl/postgres in /usr/lib/postgresql/*/bin or "
                      "on PATH; scripts/setup installs Debian's postgresql package)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running throwaway server; ``stop()`` stops it and removes its directory."""

    def __init__(self):
        import psycopg  # noqa: F401  (the postgresql extra: fail early, before starting anything)

        self.bindir = find_bindir()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            try:
                owner = pwd.getpwnam(USER)
            except KeyError:
                raise Unavailable(f"running as root and there is no {USER!r} system user to run "
                                  "PostgreSQL as (Debian's postgresql package makes it)") from None
        self.dir = Path(tempfile.mkdtemp(prefix="computed-test-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = 0
        self._running = False
        try:
            if self.as_root:
                os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8",
                      "--locale=C", "--no-sync")
            self._start()
            self._make_template()
        except BaseException:
            self.stop()
            raise

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / tool), *args]
        if self.as_root:
            cmd = ["runuser", "-u", USER, "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=self.dir, timeout=120, check=False)
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
                               f"{log}")
        return result

    def _start(self) -> None:
        # durability off (nothing outlives the session); a time zone other than UTC, so that
        # timestamps handed back in the session's zone show up in the tests
        options = ("-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=300 -c timezone=Asia/Tokyo")
        for attempt in range(5):  # another process may take the port between the probe and the start
            self.port = free_port()
            try:
                self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log),
                          "-o", f"-p {self.port} -k {self.dir} {options}")
            except RuntimeError:
                if attempt == 4:
                    raise
                continue
            self._running = True
            return

    def connect(self, dbname: str = "postgres"):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=USER, dbname=dbname, autocommit=True)

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{dbname}"

    def _make_template(self) -> None:
        from computed.store.engine import make_engine, upgrade

        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
        engine = make_engine(self.url(TEMPLATE))
        try:
            upgrade(engine)
        finally:
            engine.dispose()

    def create_database(self, migrated: bool = True) -> str:
        """A new, empty database's URL; its schema already at the head if MIGRATED (a copy of
        the template: quicker than running the migrations in every test)."""
        name = f"test_{secrets.token_hex(6)}"
        template = TEMPLATE if migrated else "template0"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self._running:
            try:
                self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", "immediate", "-D", str(self.data))
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
            self._running = False
        shutil.rmtree(self.dir, ignore_errors=True)


def unavailable(reason: str):
    """Skip (or, in CI, fail) a test that needs PostgreSQL."""
    message = f"PostgreSQL variant not run: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI is set: CI must run the PostgreSQL variants)", pytrace=False)
    pytest.skip(message)
