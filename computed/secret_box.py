"""Secrets the service must keep to do its work (an access key's secret: verifying a SigV4
signature needs the secret itself, not a hash of it) are kept sealed: encrypted and
authenticated with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) under a key
that lives in its own file, readable only by the service's user, beside the store and not
in it. A copy of the database alone reveals no secret."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken


class SecretBox:
    def __init__(self, key_file: Path):
        self.key_file = key_file
        self._fernet: Fernet | None = None

    def _key(self) -> Fernet:
        if self._fernet is None:
            self._fernet = Fernet(self._load_or_create())
        return self._fernet

    def _load_or_create(self) -> bytes:
        try:
            return self.key_file.read_bytes().strip()
        except FileNotFoundError:
            pass
        self.key_file.parent.mkdir(parents=True, exist_ok=True)
        key = Fernet.generate_key()
        temp = self.key_file.with_name(f".{self.key_file.name}.{os.getpid()}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        try:  # a link never replaces: of two processes creating it at once, one wins for both
            os.link(temp, self.key_file)
        except FileExistsError:
            key = self.key_file.read_bytes().strip()
        finally:
            temp.unlink()
        return key

    def seal(self, secret: str) -> bytes:
        return self._key().encrypt(secret.encode())

    def open(self, sealed: bytes) -> str | None:
        """The secret, or None if it was not sealed with this key."""
        try:
            return self._key().decrypt(sealed).decode()
        except InvalidToken:
            return None
