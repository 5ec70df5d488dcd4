"""Rotating the service's own two secrets, online (``computed secrets rotate-sealing-key``
and ``rotate-console-key``, run on the service's machine, beside the state directory),
while any number of service processes on the store go on serving.

The sealing key (``secret_box``), in three steps:

1. the key file becomes [new, old...] (written atomically). A process that has not read
   it again still seals with the old key only if it sealed before this write; it opens
   everything it opened before.
2. every sealed secret in the store (``access_keys.sealed_secret``, the only column that
   holds sealed data) is sealed again with the new key, in one writing transaction. A
   process that meets a re-sealed secret with the old key alone fails to open it, sees
   that the file was replaced, reads it again and opens it. Sealing happens inside writing
   transactions too, which take turns with this one, and reads the file at that moment:
   a secret sealed before it is re-sealed here; one sealed after it uses the new key.
3. the key file becomes [new]. A process still holding [old] (or [new, old]) opens what
   it meets with the new key (reading the file again first if it held [old] alone).

If the command stops half-way, the file holds [new, old...] and every secret opens with
one of them; running it again finishes the job with yet another key. A store with a
secret that no key in the file opens is refused before anything changes.

The console's cookie signing key has no grace period: rotating it writes a new key and
ends every console login (the ``console_sessions`` rows go), so every user logs in again.
That is sound without any process noticing the new key at once: a cookie counts only while
its row is in the store, and every row is gone; a process that checks a cookie signed with
the new key and fails reads the file again (``api.console_session``), and one that signs
a login reads the file first, after the login's row is written, so a cookie signed with
the old key names a row that the rotation deletes."""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import delete, select

from computed.store.engine import Database
from computed.store.models import AccessKey, ConsoleSession

from .secret_box import read_keys, write_keys

log = logging.getLogger(__name__)

#: under the state directory: the key that signs the console's cookies
CONSOLE_KEY_FILE = Path("secrets") / "console-session.key"


def new_console_key() -> bytes:
    return secrets.token_urlsafe(48).encode()


class RotationRefused(Exception):
    pass


@dataclass(frozen=True)
class SealingRotation:
    resealed: int
    dropped_keys: int


@contextmanager
def _one_at_a_time(key_file: Path) -> Iterator[None]:
    """Two rotations of one key file at once would drop each other's key: they take turns."""
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file.with_name(f".{key_file.name}.lock"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # and the lock with it


def rotate_sealing_key(db: Database, key_file: Path) -> SealingRotation:
    """A new sealing key in KEY_FILE, every sealed secret of DB sealed again with it, and
    the old keys dropped from the file (the steps above)."""
    with _one_at_a_time(key_file):
        try:
            old, _ = read_keys(key_file, Fernet.generate_key)
            old_box = MultiFernet([Fernet(k) for k in old])
        except ValueError as e:  # an empty file, or a line that is no Fernet key
            raise RotationRefused(f"{key_file} is not a key file of this service ({e}); "
                                  "nothing was changed: restore it from its backup") from None
        with db.reading() as s:
            rows = list(s.execute(select(AccessKey.id, AccessKey.sealed_secret)))
        unopened = [key_id for key_id, sealed in rows if not _opens(old_box, sealed)]
        if unopened:
            raise RotationRefused(
                f"{len(unopened)} access key secret(s) open with no key in {key_file} "
                f"({', '.join(sorted(unopened)[:5])}{'...' if len(unopened) > 5 else ''}): was the store restored "
                "without its key file? Nothing was changed")
        new = Fernet.generate_key()
        write_keys(key_file, [new, *old])  # step 1
        box = MultiFernet([Fernet(new), *(Fernet(k) for k in old)])
        with db.session() as s:  # step 2: one writing transaction
            keys = list(s.scalars(select(AccessKey)))
            for key in keys:
                key.sealed_secret = box.rotate(key.sealed_secret)  # InvalidToken: rolled back, file still opens all
        write_keys(key_file, [new])  # step 3
    log.info("sealing key rotated: %d secret(s) sealed again, %d old key(s) dropped", len(keys), len(old))
    return SealingRotation(len(keys), len(old))


def _opens(box: MultiFernet, sealed: bytes) -> bool:
    try:
        box.decrypt(sealed)
    except InvalidToken:
        return False
    return True


def rotate_console_key(db: Database, key_file: Path) -> int:
    """A new console signing key in KEY_FILE, and every console login ended; how many ended."""
    with _one_at_a_time(key_file):
        write_keys(key_file, [new_console_key()])
        with db.session() as s:
            ended = s.execute(delete(ConsoleSession)).rowcount
    log.info("console signing key rotated: %d console login(s) ended", ended)
    return ended
