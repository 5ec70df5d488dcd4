import io
import shutil
import subprocess
from pathlib import Path

import paramiko
import pytest

from computed.virt.ssh import fingerprint, generate_keypair

# An ed25519 key made from the private bytes 00 01 .. 1f; fingerprint as `ssh-keygen -l` prints it.
KNOWN_PUBLIC = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4 known@test"
KNOWN_FINGERPRINT = "SHA256:lbmsoA0yIEcEiVDRnMWuzm+nV+3ZEEpVIURqFoeSspg"


def test_generate_keypair():
    kp = generate_keypair("alice@example")
    assert kp.private_openssh.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert kp.public_openssh.startswith("ssh-ed25519 ")
    assert kp.public_openssh.endswith(" alice@example")
    assert kp.fingerprint == fingerprint(kp.public_openssh)

    key = paramiko.Ed25519Key.from_private_key(io.StringIO(kp.private_openssh))
    assert key.get_base64() == kp.public_openssh.split()[1]
    assert kp.pkey().get_base64() == key.get_base64()

    other = generate_keypair()
    assert len(other.public_openssh.split()) == 2
    assert other.fingerprint != kp.fingerprint


def test_repr_hides_private_key():
    kp = generate_keypair()
    body = kp.private_openssh.splitlines()[1]
    for text in (repr(kp), str(kp), f"{kp!r}"):
        assert body not in text and "PRIVATE" not in text
        assert kp.fingerprint in text


def test_fingerprint_of_known_key():
    assert fingerprint(KNOWN_PUBLIC) == KNOWN_FINGERPRINT
    assert fingerprint(KNOWN_PUBLIC.rsplit(" ", 1)[0]) == KNOWN_FINGERPRINT


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen is not installed")
def test_fingerprint_matches_ssh_keygen(tmp_path: Path):
    kp = generate_keypair("bob@example")
    pub = tmp_path / "id_ed25519.pub"
    pub.write_text(kp.public_openssh + "\n")
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)],
                         check=True, capture_output=True, text=True).stdout
    assert out.split()[1] == kp.fingerprint

    priv = tmp_path / "id_ed25519"
    priv.write_text(kp.private_openssh)
    priv.chmod(0o600)
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(priv)], check=True, capture_output=True,
                             text=True).stdout.split()
    assert derived[:2] == kp.public_openssh.split()[:2]
