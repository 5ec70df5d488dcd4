"""A throwaway OpenSSH server for tests: this machine's own sshd (Debian's openssh-server,
which scripts/setup installs), run by the test on a free loopback port with a host key and
an authorized client key made for it, root allowed in by that key only. Nothing of the
system's SSH set-up is used or changed: the configuration, keys, pid file and log live in
the server's own directory.

``libvirt_uri()`` is a libvirt URI reaching the system libvirtd through this server with
libvirt's libssh2 transport, the client key as its ``keyfile`` and the server's own
``known_hosts`` file (the server's host key only) as the file the host key is checked in:
nothing of root's SSH set-up is read or written. (The ``ssh`` transport runs the ssh program,
which checks root's ~/.ssh/known_hosts and could be given no other file; the ``libssh``
transport crashes a client that streams a volume, see tests/unit/virt/test_remote_streams.py.)"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")


class SshdUnavailable(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    def __init__(self):
        if not SSHD.is_file():
            raise SshdUnavailable(f"{SSHD} is missing (Debian's openssh-server; scripts/setup installs it)")
        self.dir = Path(tempfile.mkdtemp(prefix="computed-sshd-"))  # 0700: it holds private keys
        self.host_key = self.dir / "host_ed25519"
        self.client_key = self.dir / "client_ed25519"
        #: the server's host key, as the libvirt URI's known_hosts file
        self.known_hosts = self.dir / "known_hosts"
        self.log = self.dir / "sshd.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0
        try:
            for key, comment in ((self.host_key, "test-sshd-host"), (self.client_key, "test-sshd-client")):
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
                               check=True, capture_output=True)
            shutil.copyfile(self.client_key.with_suffix(".pub"), self.dir / "authorized_keys")
            # sshd refuses to start without its privilege separation directory (made at boot by
            # the ssh service, which does not run here)
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
            self._start()
            host_key = self.host_key.with_suffix(".pub").read_text().split()[:2]
            self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {' '.join(host_key)}\n")
        except BaseException:
            self.stop()
            raise

    def _config(self, port: int) -> Path:
        path = self.dir / "sshd_config"
        path.write_text("\n".join([
            "ListenAddress 127.0.0.1",
            f"Port {port}",
            f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
            f"PidFile {self.dir / 'sshd.pid'}",
            "AllowUsers root",
            "PermitRootLogin prohibit-password",  # the key only
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",  # no PAM stack for a test server (and no login session to open)
            # the authorized keys sit under /tmp, which is world-writable (sticky): strict
            # modes would refuse them, though only root can write the 0700 directory they are in
            "StrictModes no",
            "X11Forwarding no",
            "AllowTcpForwarding no",
            "PrintMotd no",
            "",
        ]))
        return path

    def _start(self) -> None:
        for attempt in range(5):  # another process may take the port between the probe and the bind
            port = free_port()
            config = self._config(port)
            check = subprocess.run([str(SSHD), "-t", "-f", str(config)], capture_output=True, text=True)
            if check.returncode != 0:
                raise SshdUnavailable(f"sshd rejects its configuration: {check.stderr.strip()}")
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)],
                                             stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            if self._wait_listening(port):
                self.port = port
                return
            self._kill()
        raise SshdUnavailable(f"sshd did not start: {self.log.read_text(errors='replace')[-2000:]}")

    def _wait_listening(self, port: int, timeout: float = 10) -> bool:
        """Whether sshd answers on PORT with its banner (False if it exited or never did)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-2.0-"):
                        return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def libvirt_uri(self, path: str = "/system") -> str:
        query = urllib.parse.urlencode({"keyfile": str(self.client_key), "known_hosts": str(self.known_hosts),
                                        "sshauth": "privkey"}, safe="/")
        return f"qemu+libssh2://root@127.0.0.1:{self.port}{path}?{query}"

    def logins(self) -> int:
        """How many logins the server accepted so far."""
        return self.log.read_text(errors="replace").count("Accepted publickey for root")

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # sshd's listener only; a session in progress ends with its client
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        self._kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Sshd:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
