"""``computed serve`` as a real child process, for tests and benchmarks that run several
service processes on one store (tests/unit/test_two_processes.py, scripts/bench/schedule).

The process gets a clean environment: this one's, without any ``COMPUTED_*`` variable, plus
the settings given, so nothing of the caller's own configuration leaks in. Its output goes
to a log file. ``ServeProcess`` returns once ``/health`` says the service reconciled its
store with libvirt (its start is done), and ``stop`` ends it with SIGTERM (SIGKILL if it
does not end)."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on HOST now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def free_port_range(size: int, rnd: random.Random) -> tuple[int, int]:
    """SIZE consecutive ports below Linux's ephemeral range (so client connections never take
    one), the first and last of them free now."""
    for _ in range(200):
        low = rnd.randrange(20000, 32000 - size)
        if all(port_free(p) for p in (low, low + size - 1)):
            return low, low + size - 1
    raise RuntimeError("no free port range found")


def serve_command() -> list[str]:
    """``computed serve`` of this checkout, run from it (cwd ROOT, which ``-c`` puts first on
    the path): not the virtualenv's ``computed`` script, whose editable install may be
    another checkout's (a git worktree sharing the virtualenv)."""
    return [sys.executable, "-c", "from computed.cli import main; main()", "serve"]


class ServeProcess:
    """One ``computed serve`` on 127.0.0.1 and a port of its own, with SETTINGS (environment
    variables: ``{"COMPUTED_DATABASE_URL": ..., ...}``), logging to LOG (appended)."""

    def __init__(self, name: str, settings: dict[str, str], log: Path, port: int | None = None,
                 start_timeout: float = 120):
        self.name = name
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMPUTED_")}
        env |= settings | {"COMPUTED_API_HOST": "127.0.0.1", "COMPUTED_API_PORT": str(self.port)}
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = log.open("ab")
        self.proc = subprocess.Popen(serve_command(), env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        try:
            self._wait_ready(start_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} ({self.url}) exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                answer = requests.get(self.url + "/health", timeout=5)
                if answer.ok and answer.json().get("reconciled"):
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} ({self.url}) not reconciled within {timeout:g} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then SIGKILL if it has not ended within TIMEOUT; its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode


def shared_store_settings(database_url: str, var_dir: Path) -> dict[str, str]:
    """The environment of service processes sharing the store at DATABASE_URL, on libvirt's
    test driver, with a free SSH port range and no reconciliation during the test (each
    process's test:///default is its own: see scripts/bench/schedule.py)."""
    low, high = free_port_range(20, random.Random())
    return {"COMPUTED_VAR_DIR": str(var_dir), "COMPUTED_DATABASE_URL": database_url,
            "COMPUTED_LIBVIRT_URI": "test:///default", "COMPUTED_SSH_PORTS": f"{low}-{high}",
            "COMPUTED_RECONCILE_INTERVAL": "3600"}
