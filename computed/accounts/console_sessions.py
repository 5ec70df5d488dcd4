"""The web console's logins, kept in the store (``console_sessions``) so that logging out
ends a session everywhere: the cookie (signed by ``api.console_session``) names a row, and
a request it carries counts only while that row is there and has not expired. Every
service process on the store sees the same rows, so a logout in one is a logout in all.

A login deletes the rows that have expired (of any account): the table holds the live
sessions and the few that ended since the last login. An account has at most
``max_per_account`` sessions open: a login past that ends the account's oldest, as a web
app's "signed in on too many devices" does, so that the newest login always works and the
table cannot grow without bound."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select

from computed.clock import Clock
from computed.errors import AuthFailure
from computed.store.engine import Database
from computed.store.models import AccessKey, ConsoleSession


@dataclass(frozen=True)
class Login:
    id: str
    access_key_id: str
    expires_at: dt.datetime


class ConsoleSessions:
    def __init__(self, db: Database, clock: Clock, max_per_account: int | None = None):
        self.db = db
        self.clock = clock
        #: the sessions one account may have open (the setting account_max_console_logins)
        self.max_per_account = max_per_account

    def open(self, access_key_id: str, lifetime: dt.timedelta) -> Login:
        """A new session for ACCESS_KEY_ID (already checked), ending after LIFETIME."""
        now = self.clock.now()
        login = Login(secrets.token_hex(16), access_key_id, (now + lifetime).replace(microsecond=0))
        with self.db.session() as s:
            # checked again in this writing transaction: a key deactivated since it was checked
            # gets no session (a deactivation deletes the sessions there were, in turn)
            if s.scalar(select(AccessKey.status).where(AccessKey.id == access_key_id)) != "Active":
                raise AuthFailure("AWS was not able to validate the provided access credentials")
            s.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
            if self.max_per_account is not None:
                self._make_room(s, access_key_id, self.max_per_account - 1)
            s.add(ConsoleSession(id=login.id, access_key_id=access_key_id, created_at=now,
                                 expires_at=login.expires_at))
        return login

    @staticmethod
    def _make_room(s, access_key_id: str, keep: int) -> None:
        """End the oldest sessions of ACCESS_KEY_ID's account but KEEP (in the writing
        transaction of the login: two logins at once cannot both keep a place)."""
        account = select(AccessKey.account_id).where(AccessKey.id == access_key_id).scalar_subquery()
        keys = select(AccessKey.id).where(AccessKey.account_id == account)
        open_ = list(s.scalars(select(ConsoleSession.id).where(ConsoleSession.access_key_id.in_(keys))
                               .order_by(ConsoleSession.created_at.desc(), ConsoleSession.id)))
        if len(open_) > keep:
            s.execute(delete(ConsoleSession).where(ConsoleSession.id.in_(open_[keep:])))

    def is_open(self, session_id: str, access_key_id: str) -> bool:
        """Whether SESSION_ID is a live session of ACCESS_KEY_ID: not ended (logged out,
        expired, its key deleted or deactivated) and ever made."""
        with self.db.reading() as s:
            expires_at = s.scalar(select(ConsoleSession.expires_at).where(
                ConsoleSession.id == session_id, ConsoleSession.access_key_id == access_key_id))
        return expires_at is not None and self.clock.now() < expires_at

    def close(self, session_id: str) -> bool:
        """End a session (a logout); whether it was still there."""
        with self.db.session() as s:
            return s.execute(delete(ConsoleSession).where(ConsoleSession.id == session_id)).rowcount > 0
