"""Secrets the service must keep to do its work (an access key's secret: verifying a SigV4
signature needs the secret itself, not a hash of it) are kept sealed: encrypted and
authenticated with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) under a key
that lives in its own file, readable only by the service's user, beside the store and not
in it. A copy of the database alone reveals no secret."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken


def read_or_create_key(path: Path, generate: Callable[[], bytes]) -> bytes:
    """The key in PATH, made with GENERATE and written there (mode 0600) if there is none
    yet; of two processes creating it at once, one wins for both."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)  # root's alone, whatever the umask
    key = generate()
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    try:  # a link never replaces: of two processes creating it at once, one wins for both
        os.link(temp, path)
    except FileExistsError:
        key = path.read_bytes().strip()
    finally:
        temp.unlink()
    return key


class SecretBox:
    def __init__(self, key_file: Path):
        self.key_file = key_file
        self._fernet: Fernet | None = None

    def _key(self) -> Fernet:
        if self._fernet is None:
            self._fernet = Fernet(read_or_create_key(self.key_file, Fernet.generate_key))
        return self._fernet

    def seal(self, secret: str) -> bytes:
        return self._key().encrypt(secret.encode())

    def open(self, sealed: bytes) -> str | None:
        """The secret, or None if it was not sealed with this key."""
        try:
            return self._key().decrypt(sealed).decode()
        except InvalidToken:
            return None
