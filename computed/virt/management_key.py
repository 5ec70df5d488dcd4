"""The service's own SSH key: put into every instance's seed beside the user's key, so the
service can tell when an instance answers SSH and its container engine works. Kept only
on the service's host, mode 0600."""

from __future__ import annotations

import io
import os
from pathlib import Path

import paramiko

from . import ssh


class ManagementKey:
    def __init__(self, path: Path):
        self.path = path
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(path.parent, 0o700)
            generated = ssh.generate_keypair(comment="computed-management")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(generated.private_openssh)
        self._private = path.read_text()
        key = self.pkey()
        self.public_openssh = f"{key.get_name()} {key.get_base64()} computed-management"

    def pkey(self) -> paramiko.PKey:
        return paramiko.Ed25519Key.from_private_key(io.StringIO(self._private))

    def __repr__(self) -> str:
        return f"ManagementKey({self.path})"
