"""The service's management keys: the SSH keys it checks its guests with (that SSH answers,
which boot runs, that the container engine works). One per host at a time, rotatable
(``computed host rotate-key``); each guest's seed holds its host's key of the day, and the
instance records which (``instances.management_key_id``).

A management key can do only those checks: its ``authorized_keys`` line in the guest is
``restrict,command="..."`` (no pty, no forwarding of ports, agent or X11) and the forced
command runs one check named by the client's command (``SSH_ORIGINAL_COMMAND``) from a
fixed list, and nothing else: no shell, no other command. It logs in as the image's default
user, whose rootless container engine (and its preloaded image) is what the engine check
proves works; that user's sudo is never reached, as no command but the checks runs.

Only public halves are in the store (``management_keys``). Private halves are files under
``<var>/management/``, directory 0700, files 0600, named after the key's id; they are never
logged, shown or sent. A rotated (retired) key stays valid for the guests that have it: it
is deleted, file and row, once no instance that is not terminated has it (``prune``).
Instances from before per-host keys have the one old key, ``<var>/management/id_ed25519``,
with no forced command; it is kept, and used for them, as long as one of them is not
terminated."""

from __future__ import annotations

import io
import logging
import os
import secrets
import shlex
import threading
from dataclasses import dataclass
from pathlib import Path

import paramiko
from sqlalchemy import select

from computed.clock import Clock
from computed.compute.state import State
from computed.errors import HostNotFound
from computed.store.engine import Database
from computed.store.models import Host, Instance, ManagementKey as KeyRow

from . import ssh

log = logging.getLogger(__name__)

#: the one key of before per-host keys, under the management directory
LEGACY_FILE = "id_ed25519"
COMMENT = "computed-management"

#: the checks the forced command runs: the name the service sends -> what it runs. Nothing
#: else is run; ENGINE and IMAGE come from the image's manifest (the admin's build).
CHECKS = ("ready", "boot-id", "engine")
#: the commands of a guest from before per-host keys (no forced command): the same checks
LEGACY_COMMANDS = {"ready": "true", "boot-id": "cat /proc/sys/kernel/random/boot_id",
                   "engine": "nice -n 19 {engine} run --rm {image} true"}


def forced_command(engine: str, image: str) -> str:
    """The shell program a management key's login runs, whatever the client asked: the
    check named by SSH_ORIGINAL_COMMAND if it is one of CHECKS, else a refusal (exit 126;
    a request for a shell has no SSH_ORIGINAL_COMMAND and is refused as well)."""
    engine_check = " ".join(shlex.quote(w) for w in ("nice", "-n", "19", engine, "run", "--rm", image, "true"))
    return ('case "$SSH_ORIGINAL_COMMAND" in '
            "ready) echo ready;; "
            "boot-id) exec cat /proc/sys/kernel/random/boot_id;; "
            f"engine) exec {engine_check};; "
            '*) echo "computed management key: only the checks ready, boot-id, engine" >&2; exit 126;; '
            "esac")


def authorized_line(public_openssh: str, engine: str, image: str) -> str:
    """PUBLIC_OPENSSH as its guest's authorized_keys holds it: restricted to the checks."""
    command = forced_command(engine, image)
    if "\\" in command or "\n" in command:  # sshd unquotes only \" in an option's value
        raise ValueError("a forced command has no backslash or newline")
    return f'restrict,command="{command.replace(chr(34), chr(92) + chr(34))}" {public_openssh}'


@dataclass(frozen=True)
class Key:
    """A management key: its id (None for the old global key), public half, and the private
    half read from its file when needed (never kept in a field that repr shows)."""
    id: str | None
    host: str | None
    public_openssh: str
    fingerprint: str
    path: Path

    def pkey(self) -> paramiko.PKey:
        return paramiko.Ed25519Key.from_private_key(io.StringIO(self.path.read_text()))

    @property
    def restricted(self) -> bool:
        """Whether guests hold it with the forced command (every per-host key; not the old one)."""
        return self.id is not None

    def command(self, check: str, engine: str = "", image: str = "") -> str:
        """What the service sends to run CHECK with this key."""
        if check not in CHECKS:
            raise ValueError(f"no check {check!r}")
        if self.restricted:
            return check
        return LEGACY_COMMANDS[check].format(engine=shlex.quote(engine), image=shlex.quote(image))

    def __repr__(self) -> str:
        return f"ManagementKey({self.id or 'legacy'}, {self.fingerprint})"


class ManagementKeys:
    def __init__(self, directory: Path, db: Database, clock: Clock | None = None):
        self.dir = directory
        self.db = db
        self.clock = clock or Clock()
        self._guard = threading.Lock()

    def _private_dir(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        return self.dir

    def _path(self, key_id: str) -> Path:
        return self.dir / key_id

    def _row_key(self, row: KeyRow) -> Key:
        return Key(row.id, row.host, row.public_key, row.fingerprint, self._path(row.id))

    # -- which key -------------------------------------------------------------------

    def current(self, host: str) -> Key:
        """HOST's key for new guests (made now if it has none, or its file is gone)."""
        with self._guard:
            with self.db.reading() as s:
                row = s.scalars(select(KeyRow).where(KeyRow.host == host, KeyRow.retired_at.is_(None))
                                .order_by(KeyRow.created_at.desc(), KeyRow.id)).first()
            if row is not None and self._path(row.id).is_file():
                return self._row_key(row)
            if row is not None:
                log.warning("the private half of management key %s of host %s is gone: a new key is made",
                            row.id, host)
                with self.db.session() as s:
                    s.get(KeyRow, row.id).retired_at = self.clock.now()
            return self._create(host)

    def of(self, inst: Instance) -> Key | None:
        """The key INST's seed holds (None if its private half is gone)."""
        if inst.management_key_id is None:
            path = self.dir / LEGACY_FILE
            if not path.is_file():
                return None
            public = _public_of(path)
            return Key(None, None, public, ssh.fingerprint(public), path)
        with self.db.reading() as s:
            row = s.get(KeyRow, inst.management_key_id)
        if row is None or not self._path(row.id).is_file():
            return None
        return self._row_key(row)

    def list(self, host: str) -> list[KeyRow]:
        """HOST's keys, newest first (public halves)."""
        with self.db.reading() as s:
            return list(s.scalars(select(KeyRow).where(KeyRow.host == host)
                                  .order_by(KeyRow.created_at.desc(), KeyRow.id)))

    def in_use(self, key_id: str) -> int:
        """How many instances that are not terminated have the key KEY_ID."""
        with self.db.reading() as s:
            return len(s.scalars(select(Instance.id).where(Instance.management_key_id == key_id,
                                                           Instance.state != State.TERMINATED)).all())

    # -- rotation ------------------------------------------------------------------------

    def rotate(self, host: str) -> Key:
        """A new key for HOST's new guests; its older keys are retired: they stay valid for
        the guests that have them until those are terminated (``prune``)."""
        with self.db.reading() as s:
            if s.get(Host, host) is None:
                raise HostNotFound(f"the host {host!r} does not exist")
        with self._guard:
            new = self._create(host)
            with self.db.session() as s:
                for row in s.scalars(select(KeyRow).where(KeyRow.host == host, KeyRow.retired_at.is_(None),
                                                          KeyRow.id != new.id)):
                    row.retired_at = self.clock.now()
        log.info("management key of host %s rotated: %s is the new one", host, new.fingerprint)
        self.prune()
        return new

    def prune(self) -> list[str]:
        """Delete the retired keys (and the keys of hosts no longer in the store) that no
        instance that is not terminated has, file first; and the old global key once no such
        instance has it. The ids deleted."""
        deleted = []
        with self._guard, self.db.session() as s:
            live = set(s.scalars(select(Instance.management_key_id).where(Instance.state != State.TERMINATED)
                                 .distinct()))
            hosts = set(s.scalars(select(Host.name)))
            for row in s.scalars(select(KeyRow)):
                if row.id in live or (row.retired_at is None and row.host in hosts):
                    continue
                self._path(row.id).unlink(missing_ok=True)
                s.delete(row)
                deleted.append(row.id)
            legacy = self.dir / LEGACY_FILE
            if None not in live and legacy.exists():
                legacy.unlink()
                deleted.append(LEGACY_FILE)
        for key_id in deleted:
            log.info("management key %s deleted: no guest that is not terminated has it", key_id)
        return deleted

    def _create(self, host: str) -> Key:
        key_id = "mk-" + secrets.token_hex(8)
        generated = ssh.generate_keypair(comment=COMMENT)
        path = self._private_dir() / key_id
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(generated.private_openssh)
        try:
            with self.db.session() as s:
                s.add(KeyRow(id=key_id, host=host, public_key=generated.public_openssh,
                             fingerprint=generated.fingerprint, created_at=self.clock.now()))
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return Key(key_id, host, generated.public_openssh, generated.fingerprint, path)

    def __repr__(self) -> str:
        return f"ManagementKeys({self.dir})"


def _public_of(path: Path) -> str:
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(path.read_text()))
    return f"{key.get_name()} {key.get_base64()} {COMMENT}"
