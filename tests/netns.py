"""A network of the test's own for firewall tests: a network namespace joined to the host by
a veth pair, with addresses from the benchmarking ranges (198.18.0.0/15, 2001:2::/48), so
that a test proves what a guest can and cannot reach without a packet to any real address.

The namespace has two addresses of each family: ``allowed`` (on the veth, beside the host's
own end ``host``) and ``forbidden`` (routed to it from the host), each answered by a
listener (``probe_listener``) that records what reached it. ``forbidden_ranges`` are the
ranges a test tells the firewall to refuse (they hold ``forbidden`` and nothing else)."""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

LISTENER = Path(__file__).with_name("probe_listener.py")
#: the system's Python, which a process of any user can run (the virtualenv may sit where it cannot)
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TestNetwork:
    """Use as a context manager: the namespace, the veth pair and the listeners are made on
    entry and gone on exit."""

    __test__ = False  # not a pytest class

    def __init__(self):
        tag = secrets.token_hex(3)
        k = secrets.randbelow(254) + 1  # one /24 (one /64) of the ranges per network
        self.name = f"computed-test-{tag}"
        self.host_if, self.ns_if = f"cgh{tag}", f"cgn{tag}"
        self.host = {4: f"198.18.{k}.1", 6: f"2001:2:0:{k:x}::1"}
        self.allowed = {4: f"198.18.{k}.2", 6: f"2001:2:0:{k:x}::2"}
        self.forbidden = {4: f"198.19.{k}.2", 6: f"2001:2:1:{k:x}::2"}
        self.forbidden_ranges = (ipaddress.ip_network(f"198.19.{k}.0/24"), ipaddress.ip_network(f"2001:2:1:{k:x}::/64"))
        self.port = free_port()
        self.token = f"computed-probe-{secrets.token_hex(8)}"
        self._listener: subprocess.Popen | None = None

    def __enter__(self) -> TestNetwork:
        try:
            self._make()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _make(self) -> None:
        ip("netns", "add", self.name)
        ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if, "netns", self.name)
        ip("addr", "add", f"{self.host[4]}/24", "dev", self.host_if)
        ip("addr", "add", f"{self.host[6]}/64", "dev", self.host_if, "nodad")
        ip("link", "set", self.host_if, "up")
        inside = ("netns", "exec", self.name, "ip")
        ip(*inside, "link", "set", "lo", "up")
        ip(*inside, "addr", "add", f"{self.allowed[4]}/24", "dev", self.ns_if)
        ip(*inside, "addr", "add", f"{self.allowed[6]}/64", "dev", self.ns_if, "nodad")
        ip(*inside, "addr", "add", f"{self.forbidden[4]}/32", "dev", "lo")
        ip(*inside, "addr", "add", f"{self.forbidden[6]}/128", "dev", "lo")
        ip(*inside, "link", "set", self.ns_if, "up")
        ip(*inside, "route", "add", "default", "via", self.host[4])
        ip(*inside, "-6", "route", "add", "default", "via", self.host[6])
        ip("route", "add", f"{self.forbidden[4]}/32", "via", self.allowed[4])
        ip("-6", "route", "add", f"{self.forbidden[6]}/128", "via", self.allowed[6])
        self._listener = subprocess.Popen(
            ["ip", "netns", "exec", self.name, sys.executable, "-I", str(LISTENER), self.token, str(self.port), "::"],
            stdout=subprocess.PIPE, text=True)
        assert self._listener.stdout.readline().startswith("listening"), "the namespace's listener did not start"
        self.reached: list[str] = []
        threading.Thread(target=self._record, daemon=True).start()

    def _record(self) -> None:
        for line in self._listener.stdout:
            if line.startswith("accepted "):
                self.reached.append(line.split()[1])

    def reached_at(self, address: str, timeout: float = 2) -> bool:
        """Whether a connection reached the namespace's ADDRESS (waiting a moment for the
        listener's word)."""
        want = ipaddress.ip_address(address)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(_unmapped(a) == want for a in self.reached):
                return True
            time.sleep(0.1)
        return False

    def close(self) -> None:
        if self._listener is not None:
            self._listener.terminate()
            self._listener.wait(10)
        ip("link", "del", self.host_if, check=False)  # its peer and the routes through it go with it
        ip("netns", "del", self.name, check=False)


def _unmapped(address: str):
    a = ipaddress.ip_address(address)
    return a.ipv4_mapped if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped else a


class HostListener:
    """A listener of the test process's on ADDRESS of the host (loopback, or the host's end
    of a TestNetwork): it answers TOKEN and counts who came."""

    def __init__(self, address: str, token: str):
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, 0))
        self.sock.listen(16)
        self.address, self.port = address, self.sock.getsockname()[1]
        self.token = token
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                try:
                    conn.sendall(f"{self.token}\n".encode())
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


def connect_as(uid: int, address: str, port: int, timeout: float = 5) -> str:
    """What a TCP connect from a process of UID to ADDRESS:PORT gets: the first line the
    other end sends, or ``error: ...``."""
    code = ("import socket, sys\n"
            "try:\n"
            "    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))\n"
            "    print(s.makefile().readline().strip())\n"
            "except OSError as e:\n"
            "    print(f'error: {e!r}')\n")
    done = subprocess.run([PYTHON, "-I", "-c", code, address, str(port), str(timeout)], capture_output=True,
                          text=True, timeout=timeout + 30, user=uid, group=uid, extra_groups=[], cwd="/",
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    return done.stdout.strip() or f"error: {done.stderr.strip()}"
