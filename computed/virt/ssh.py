"""SSH into nodes with paramiko: key pairs, waiting for a guest's SSH, running commands."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import time
from dataclasses import dataclass

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519


@dataclass(frozen=True)
class KeyPair:
    private_openssh: str  # the secret: hand it to its owner once, never log or store it
    public_openssh: str
    fingerprint: str  # SHA256:..., as ssh-keygen -l prints it

    def pkey(self) -> paramiko.PKey:
        return paramiko.Ed25519Key.from_private_key(io.StringIO(self.private_openssh))

    def __repr__(self) -> str:  # never show the private key in logs or tracebacks
        return f"KeyPair(fingerprint={self.fingerprint!r})"


def generate_keypair(comment: str = "") -> KeyPair:
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    if comment:
        public = f"{public} {comment}"
    return KeyPair(private, public, fingerprint(public))


def fingerprint(public_openssh: str) -> str:
    blob = base64.b64decode(public_openssh.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


class RecordingPolicy(paramiko.MissingHostKeyPolicy):
    """Accept the first host key a new guest shows and remember it (trust on first use)."""

    def __init__(self):
        self.seen: dict[str, paramiko.PKey] = {}

    def missing_host_key(self, client, hostname, key):
        self.seen[hostname] = key
        client.get_host_keys().add(hostname, key.get_name(), key)


#: Seconds one login attempt waits for the SSH banner before starting over.
BANNER_WAIT = 2.0


class SSHTimeout(TimeoutError):
    pass


def connect(host: str, port: int, user: str, pkey: paramiko.PKey, timeout: float = 10,
            policy: paramiko.MissingHostKeyPolicy | None = None,
            banner_timeout: float | None = None) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(policy or RecordingPolicy())
    client.connect(host, port=port, username=user, pkey=pkey, timeout=timeout,
                   banner_timeout=banner_timeout or timeout, auth_timeout=timeout,
                   allow_agent=False, look_for_keys=False)
    return client


def wait_for_login(host: str, port: int, user: str, pkey: paramiko.PKey, deadline: float,
                   interval: float = 0.25) -> paramiko.SSHClient:
    """Connect and authenticate, retrying until ``time.monotonic()`` passes DEADLINE.

    Each attempt waits only briefly for the server's banner: a port forwarded by QEMU's
    user-mode network accepts at once even while the guest has no address yet, and such a
    connection may stay silent for many seconds after sshd is in fact ready for a new one."""
    # While the guest boots, failed handshakes are expected: keep paramiko's thread quiet.
    transport_log = logging.getLogger("paramiko.transport")
    level = transport_log.level
    transport_log.setLevel(logging.CRITICAL)
    try:
        return _retry_login(host, port, user, pkey, deadline, interval)
    finally:
        transport_log.setLevel(level)


def _retry_login(host, port, user, pkey, deadline, interval) -> paramiko.SSHClient:
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            client = connect(host, port, user, pkey, timeout=max(1.0, min(30.0, deadline - time.monotonic())),
                             banner_timeout=BANNER_WAIT)
            run(client, "true", timeout=30)
            return client
        except (TimeoutError, OSError, EOFError, paramiko.SSHException) as e:
            last = e
            time.sleep(interval)
    raise SSHTimeout(f"no SSH login to {user}@{host}:{port}: {last}")


def run(client: paramiko.SSHClient, command: str, timeout: float = 120) -> tuple[int, str, str]:
    """Run COMMAND; (exit status, stdout, stderr)."""
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    out = stdout.read().decode(errors="replace")
    err = stderr.read().decode(errors="replace")
    return stdout.channel.recv_exit_status(), out, err
