"""Secrets the service must keep to do its work (an access key's secret: verifying a SigV4
signature needs the secret itself, not a hash of it) are kept sealed: encrypted and
authenticated with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) under a key
that lives in its own file, readable only by the service's user, beside the store and not
in it. A copy of the database alone reveals no secret.

The key file holds one key per line, newest first: a box seals with the newest and opens
with any (``MultiFernet``), which is what rotating the key online needs
(``computed.accounts.key_rotation``). Every service process has a box of its own on the same
file, and none is restarted by a rotation: a box re-reads the file whenever it seals
(sealing is rare, and runs inside a writing transaction, see ``key_rotation``) and when an
open fails and the file is no longer the one it read (a ``stat``: its inode, size and
times). That check takes the place of a rate limit: the file is read again only when it
was replaced, so a box never refuses a secret sealed with a key that is in the file, and a
flood of failures costs a ``stat`` each, never a re-read."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


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


def write_keys(path: Path, keys: Sequence[bytes]) -> None:
    """KEYS in PATH, one a line, replacing what was there at once (a temporary file, mode
    0600 from the start, renamed over it: a reader sees the old file or the new one). The
    new file keeps the old one's owner: root rotating the key of a service that runs as
    another user must not leave it a file it cannot read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        owner = path.stat()
    except FileNotFoundError:
        owner = None
    temp = path.with_name(f".{path.name}.{os.getpid()}.new")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a leftover temp file keeps its mode through O_CREAT
        if owner is not None and (owner.st_uid, owner.st_gid) != (os.geteuid(), os.getegid()):
            os.fchown(fd, owner.st_uid, owner.st_gid)
        with os.fdopen(fd, "wb") as f:
            f.write(b"".join(k + b"\n" for k in keys))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def file_identity(path: Path) -> tuple[int, ...] | None:
    """What tells a replaced file from the one read before (None: there is none)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def read_keys(path: Path, generate: Callable[[], bytes]) -> tuple[list[bytes], tuple[int, ...] | None]:
    """The keys in PATH, newest first (made with GENERATE if there is no file yet), and the
    identity of the file they were read from."""
    read_or_create_key(path, generate)
    while True:
        before = file_identity(path)
        keys = [line.strip() for line in path.read_bytes().splitlines() if line.strip()]
        if file_identity(path) == before:  # not replaced while we read it
            if not keys:
                raise ValueError(f"{path} holds no key: restore it from its backup")
            return keys, before


class SecretBox:
    def __init__(self, key_file: Path):
        self.key_file = key_file
        self._lock = threading.Lock()
        self._fernet: MultiFernet | None = None
        self._identity: tuple[int, ...] | None = None

    def _load(self) -> MultiFernet:
        keys, identity = read_keys(self.key_file, Fernet.generate_key)
        fernet = MultiFernet([Fernet(k) for k in keys])
        with self._lock:
            self._fernet, self._identity = fernet, identity
        return fernet

    def _keys(self) -> MultiFernet:
        return self._fernet or self._load()

    def seal(self, secret: str) -> bytes:
        """SECRET sealed with the newest key of the file as it is now (read again here:
        callers seal inside a writing transaction, which a rotation's re-sealing one
        cannot overlap, so nothing is sealed with a key that rotation is about to drop)."""
        return self._load().encrypt(secret.encode())

    def open(self, sealed: bytes) -> str | None:
        """The secret, or None if it was sealed with none of the file's keys."""
        try:
            return self._keys().decrypt(sealed).decode()
        except InvalidToken:
            pass
        if file_identity(self.key_file) == self._identity:
            return None  # the keys we hold are the file's: it is not ours
        try:
            return self._load().decrypt(sealed).decode()
        except InvalidToken:
            return None

    def rotate(self, sealed: bytes) -> bytes:
        """SEALED sealed again with the newest key (InvalidToken if no key opens it)."""
        return self._keys().rotate(sealed)
