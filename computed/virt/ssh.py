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


def fingerprint_line(public_openssh: str) -> str:
    """One host key as ``ssh-keygen -l`` and EC2's console output show it:
    ``256 SHA256:... (ED25519)``."""
    kind = public_openssh.split()[0]
    bits = {"ssh-ed25519": 256, "ecdsa-sha2-nistp256": 256, "ecdsa-sha2-nistp384": 384,
            "ecdsa-sha2-nistp521": 521}.get(kind)
    label = kind.removeprefix("ssh-").split("-")[0].upper()
    return f"{bits or ''} {fingerprint(public_openssh)} ({label})".lstrip()


def host_key_entry(host: str, port: int) -> str:
    """How known_hosts (and paramiko's host keys) name HOST at PORT: ``[host]:port`` unless 22."""
    return host if port == 22 else f"[{host}]:{port}"


def public_pkey(public_openssh: str) -> paramiko.PKey:
    """A paramiko public key from its OpenSSH line (``type base64 [comment]``)."""
    kind, blob = public_openssh.split()[:2]
    return paramiko.PKey.from_type_string(kind, base64.b64decode(blob))


class HostKeyMismatch(paramiko.SSHException):
    """The server showed another host key than the one it must have."""


class PinnedPolicy(paramiko.MissingHostKeyPolicy):
    """Only the one host key the instance was given: any other is refused, never learnt.
    (paramiko asks a missing-key policy only when it has no key for the host name; the
    pinned key is given under that name, so a different key is paramiko's own
    BadHostKeyException, and this policy refuses a key offered under any other name.)"""

    def __init__(self, public_openssh: str):
        self.expected = public_pkey(public_openssh)

    def missing_host_key(self, client, hostname, key):
        raise HostKeyMismatch(f"{hostname} showed the host key {fingerprint(f'{key.get_name()} {key.get_base64()}')}, "
                              f"not {fingerprint(f'{self.expected.get_name()} {self.expected.get_base64()}')}")


class RecordingPolicy(paramiko.MissingHostKeyPolicy):
    """Accept the first host key a new guest shows and remember it (trust on first use):
    only for an instance launched before the service gave guests their host keys."""

    def __init__(self):
        self.seen: dict[str, paramiko.PKey] = {}

    def missing_host_key(self, client, hostname, key):
        self.seen[hostname] = key
        client.get_host_keys().add(hostname, key.get_name(), key)


#: Seconds one login attempt waits for the SSH banner before starting over.
BANNER_WAIT = 2.0


#: seconds between attempts while a guest shows another host key than its own (one whose
#: cloud-init has not installed it yet): each attempt is a full handshake the guest pays for
MISMATCH_WAIT = 2.0


class SSHTimeout(TimeoutError):
    pass


def connect(host: str, port: int, user: str, pkey: paramiko.PKey, timeout: float = 10,
            policy: paramiko.MissingHostKeyPolicy | None = None,
            banner_timeout: float | None = None, host_key: str | None = None) -> paramiko.SSHClient:
    """A logged-in client. HOST_KEY (an OpenSSH public key line): the only host key
    accepted (a mismatch raises paramiko.BadHostKeyException before any login); without
    it, POLICY decides (default: trust on first use)."""
    client = paramiko.SSHClient()
    if host_key is not None:
        pinned = PinnedPolicy(host_key)
        client.get_host_keys().add(host_key_entry(host, port), pinned.expected.get_name(), pinned.expected)
        client.set_missing_host_key_policy(pinned)
    else:
        client.set_missing_host_key_policy(policy or RecordingPolicy())
    try:
        client.connect(host, port=port, username=user, pkey=pkey, timeout=timeout,
                       banner_timeout=banner_timeout or timeout, auth_timeout=timeout,
                       allow_agent=False, look_for_keys=False)
    except BaseException:
        # paramiko leaves the transport of a refused host key open: left to the garbage
        # collector, a boot's retries would pile up unauthenticated connections until sshd's
        # MaxStartups drops new ones
        client.close()
        raise
    return client


def wait_for_login(host: str, port: int, user: str, pkey: paramiko.PKey, deadline: float,
                   interval: float = 0.25, host_key: str | None = None,
                   probe: str = "true") -> paramiko.SSHClient:
    """Connect and authenticate, retrying until ``time.monotonic()`` passes DEADLINE.

    Each attempt waits only briefly for the server's banner: a port forwarded by QEMU's
    user-mode network accepts at once even while the guest has no address yet, and such a
    connection may stay silent for many seconds after sshd is in fact ready for a new one.

    HOST_KEY: the one host key accepted; a guest showing another is retried, never logged
    in to (an image that installs the seed's host key only with cloud-init, after sshd
    started, shows its own first-boot key for a few seconds). PROBE: the command run to
    tell the login works (the management key's forced command takes ``ready``)."""
    # While the guest boots, failed handshakes are expected: keep paramiko's thread quiet.
    transport_log = logging.getLogger("paramiko.transport")
    level = transport_log.level
    transport_log.setLevel(logging.CRITICAL)
    try:
        return _retry_login(host, port, user, pkey, deadline, interval, host_key, probe)
    finally:
        transport_log.setLevel(level)


def _retry_login(host, port, user, pkey, deadline, interval, host_key, probe) -> paramiko.SSHClient:
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            client = connect(host, port, user, pkey, timeout=max(1.0, min(30.0, deadline - time.monotonic())),
                             banner_timeout=BANNER_WAIT, host_key=host_key)
            try:
                rc, _, err = run(client, probe, timeout=30)
            except BaseException:
                client.close()
                raise
            if rc != 0:
                client.close()
                raise paramiko.SSHException(f"{probe!r} exited {rc}: {err.strip()[-200:]}")
            return client
        except paramiko.BadHostKeyException as e:
            last = HostKeyMismatch(f"the guest showed the host key {fingerprint(_line(e.key))}, "
                                   f"not its own {fingerprint(_line(e.expected_key))}")
            time.sleep(max(interval, MISMATCH_WAIT))
        except (TimeoutError, OSError, EOFError, paramiko.SSHException) as e:
            last = e
            time.sleep(interval)
    raise SSHTimeout(f"no SSH login to {user}@{host}:{port}: {last}")


def _line(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


def run(client: paramiko.SSHClient, command: str, timeout: float = 120) -> tuple[int, str, str]:
    """Run COMMAND; (exit status, stdout, stderr)."""
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    out = stdout.read().decode(errors="replace")
    err = stderr.read().decode(errors="replace")
    return stdout.channel.recv_exit_status(), out, err
