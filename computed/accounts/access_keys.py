"""An account's access keys, as IAM has them: at most two (``MAX_PER_ACCOUNT``), each
Active or Inactive, made, deactivated, reactivated and deleted by the account itself or by
an admin. Two keys are what rotating needs: make the second, move every client to it,
deactivate the first (anything still using it fails, and shows up), then delete it.

Deleting or deactivating an account's last active key would leave it no way in but an
admin (or, for the only admin, ``computed account create --admin`` on the service's
machine), so it is refused (``LastActiveAccessKey``) unless asked for with ``force``: a
leaked key can still be cut off at once. The key a request authenticates with may be
deleted or deactivated by that very request: it is answered, and the key's next request
fails.

Nothing caches a key: ``Accounts.find`` reads it from the store at every request, so a key
deleted or deactivated by one service process fails in every process at its next request.
Deactivating or deleting a key also deletes the console logins made with it.

Each key shows when it last authenticated a request, and through what (``rest``, ``ec2``
or ``console``). That time is kept to the minute (``USE_RESOLUTION``): a request writes it
only when the time its key's row showed (read anyway to authenticate) is a minute old or
more, so a busy key costs one write a minute, not one per request, whatever the number of
processes (the write's own condition skips a row another process has just brought up to
date, and each process tries at most once a minute per key)."""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from computed.clock import Clock
from computed.errors import (AccessKeyLimitExceeded, AccessKeyNotFound, AccountNotFound, InvalidParameterValue,
                             LastActiveAccessKey)
from computed.store.engine import Database
from computed.store.models import AccessKey, Account, ConsoleSession

from .registry import KEY_ALPHABET, Caller, Credentials, addressed_account, new_access_key_id, new_secret, shown
from .secret_box import SecretBox

log = logging.getLogger(__name__)

MAX_PER_ACCOUNT = 2
ACTIVE, INACTIVE = "Active", "Inactive"
STATUSES = (ACTIVE, INACTIVE)
#: what a key's last use names: the REST API, the EC2 Query API, the web console
SERVICES = ("rest", "ec2", "console")
#: how fresh a key's last use is kept: a key is written to at most once per this
USE_RESOLUTION = dt.timedelta(minutes=1)
KEY_ID = re.compile(f"AKCD[{KEY_ALPHABET}]{{16}}")


@dataclass(frozen=True)
class KeyInfo:
    """An access key as its account sees it: never its secret."""
    access_key_id: str
    account_id: str
    account_name: str
    status: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    last_used_service: str | None

    @classmethod
    def of(cls, key: AccessKey) -> KeyInfo:
        return cls(key.id, key.account_id, key.account.name, key.status, key.created_at, key.last_used_at,
                   key.last_used_service)


class AccessKeys:
    def __init__(self, db: Database, box: SecretBox, clock: Clock):
        self.db = db
        self.box = box
        self.clock = clock
        #: key id -> when this process last tried to record its use: a burst of requests
        #: that all read a stale time try once, not once each (never a cache of the key)
        self._tried: dict[str, dt.datetime] = {}

    # -- what an account (or an admin) asks for ---------------------------------------------

    def create(self, caller: Caller, account_id: str | None = None) -> tuple[KeyInfo, Credentials]:
        """A new active key for the caller's account (an admin's: ACCOUNT_ID's); its secret is
        in the credentials returned and nowhere else in the clear. A third key is refused."""
        secret = new_secret()
        now = self.clock.now()
        with self.db.session() as s:  # writers take turns: the count cannot change under us
            account = addressed_account(s, caller, account_id, "make access keys for another account")
            count = s.scalar(select(func.count()).select_from(AccessKey).where(AccessKey.account_id == account.id))
            if count >= MAX_PER_ACCOUNT:
                raise AccessKeyLimitExceeded(
                    f"the account {account.name} has {count} access keys, the most an account may have: delete one "
                    "first (to rotate a key: make the second, move its clients, deactivate and delete the first)")
            key_id = new_access_key_id()
            while s.get(AccessKey, key_id) is not None:
                key_id = new_access_key_id()
            key = AccessKey(id=key_id, account_id=account.id, sealed_secret=self.box.seal(secret), created_at=now,
                            status=ACTIVE)
            key.account = account
            s.add(key)
            s.flush()
            info = KeyInfo.of(key)
        return info, Credentials(account.id, account.name, account.admin, key_id, secret)

    def list(self, caller: Caller, account_id: str | None = None) -> list[KeyInfo]:
        """The keys of the caller's account (an admin's: ACCOUNT_ID's), oldest first."""
        with self.db.reading() as s:
            account = addressed_account(s, caller, account_id, "see another account's access keys")
            keys = s.scalars(select(AccessKey).where(AccessKey.account_id == account.id)
                             .order_by(AccessKey.created_at, AccessKey.id))
            return [KeyInfo.of(k) for k in keys]

    def get(self, caller: Caller, access_key_id: str) -> KeyInfo:
        with self.db.reading() as s:
            return KeyInfo.of(self._key(s, caller, access_key_id))

    def set_status(self, caller: Caller, access_key_id: str, status: str, force: bool = False) -> KeyInfo:
        """Make a key Active or Inactive. An inactive key authenticates nothing, its console
        logins end (at once, and for good: reactivating it does not bring them back)."""
        if status not in STATUSES:
            raise InvalidParameterValue(f"status: {ACTIVE} or {INACTIVE}, not {shown(status)}")
        with self.db.session() as s:
            key = self._key(s, caller, access_key_id)
            if status == INACTIVE and key.status == ACTIVE:
                self._not_the_last(s, key, "deactivate", force)
                s.execute(delete(ConsoleSession).where(ConsoleSession.access_key_id == key.id))
            key.status = status
            s.flush()
            info = KeyInfo.of(key)
        log.info("access key %s of account %s made %s", info.access_key_id, info.account_name, status)
        return info

    def delete(self, caller: Caller, access_key_id: str, force: bool = False) -> KeyInfo:
        """Delete a key, for good; its console logins end with it."""
        with self.db.session() as s:
            key = self._key(s, caller, access_key_id)
            if key.status == ACTIVE:
                self._not_the_last(s, key, "delete", force)
            info = KeyInfo.of(key)
            s.execute(delete(ConsoleSession).where(ConsoleSession.access_key_id == key.id))
            s.delete(key)
        log.info("access key %s of account %s deleted", info.access_key_id, info.account_name)
        return info

    # -- what authenticating does ---------------------------------------------------------

    def record_use(self, access_key_id: str, service: str, seen: dt.datetime | None) -> bool:
        """Record that the key authenticated a request through SERVICE now, if the last use
        SEEN (what its row showed when the request was authenticated) is USE_RESOLUTION old
        or more; whether it wrote. A failure to write is logged and never fails the request."""
        now = self.clock.now()
        if seen is not None and now - seen < USE_RESOLUTION:
            return False
        tried = self._tried.get(access_key_id)
        if tried is not None and dt.timedelta(0) <= now - tried < USE_RESOLUTION:
            return False
        if len(self._tried) > 10_000:  # keys come and go: forget them all now and then
            self._tried.clear()
        self._tried[access_key_id] = now
        try:
            with self.db.session() as s:
                done = s.execute(update(AccessKey).where(
                    AccessKey.id == access_key_id,
                    or_(AccessKey.last_used_at.is_(None), AccessKey.last_used_at <= now - USE_RESOLUTION))
                    .values(last_used_at=now, last_used_service=service)
                    .execution_options(synchronize_session=False))
                return done.rowcount > 0
        except SQLAlchemyError as e:
            log.warning("could not record the use of access key %s: %s", access_key_id, type(e).__name__)
            return False

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def _key(s: Session, caller: Caller, access_key_id: str) -> AccessKey:
        """The key ACCESS_KEY_ID if the caller may act on it (its account's, or any for an
        admin); else not found, the same answer for another account's key as for none."""
        key = None
        if isinstance(access_key_id, str) and KEY_ID.fullmatch(access_key_id):
            key = s.get(AccessKey, access_key_id)
        if key is None or not caller.sees(key.account_id):
            raise AccessKeyNotFound(f"the access key {shown(access_key_id)} does not exist")
        return key

    @staticmethod
    def _not_the_last(s: Session, key: AccessKey, verb: str, force: bool) -> None:
        """LastActiveAccessKey unless KEY's account has another active key, or FORCE."""
        others = s.scalar(select(func.count()).select_from(AccessKey).where(
            AccessKey.account_id == key.account_id, AccessKey.id != key.id, AccessKey.status == ACTIVE))
        if not others and not force:
            raise LastActiveAccessKey(
                f"{key.id} is the last active access key of the account {key.account.name}: to {verb} it would leave "
                f"the account no way in. Make another key first (to rotate it), or {verb} it with force=true")
