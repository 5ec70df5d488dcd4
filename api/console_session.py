"""The web console's sessions (``api.console``): a signed cookie that names a login kept in
the store (``computed.accounts.console_sessions``), its access key and when it ends, never the
secret, under a key of the service's own (``<state>/secrets/console-session.key``, mode
0600, made on first use; ``computed secrets rotate-console-key`` replaces it and ends every
login: ``computed.accounts.key_rotation``). Logging out deletes the login, which ends every
copy of the cookie at once, in every service process on the store.

``api.auth`` takes the cookie as a third way to authenticate, for ``/v1`` and the console's
own calls only (never the EC2 API or /metrics), looking the access key up again on every
request: a key that is gone ends its sessions at once. A request the cookie authenticates
that may change something (any method but GET and HEAD) must also carry ``X-Computed-Console:
1``, which a cross-site form cannot send (the cookie is ``SameSite=Strict`` as well). Over
HTTPS the cookie is ``Secure`` and named ``__Host-computed_console`` (``cookie_name``)."""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from pathlib import Path

from flask import current_app, request
from itsdangerous import BadData, URLSafeSerializer

from computed.accounts.console_sessions import Login
from computed.errors import ComputedError
from computed.accounts.key_rotation import CONSOLE_KEY_FILE, new_console_key
from computed.accounts.secret_box import file_identity, read_keys

from .service import service

COOKIE = "computed_console"
#: the cookie's name over HTTPS: the browser keeps it only if Secure, Path=/ and no Domain,
#: so no page of another subdomain or of plain HTTP can set or shadow it
SECURE_COOKIE = "__Host-" + COOKIE
HEADER = "X-Computed-Console"
LIFETIME = dt.timedelta(hours=12)
KEY_FILE = CONSOLE_KEY_FILE
PREFIX = "/console"
SESSION_PATH = "/console/session"
ASSETS = "/console/assets/"
#: methods that change nothing: the cookie alone will do
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
EXTENSION = "computed-console-sessions"
SALT = "computed-console-session"


class ConsoleHeaderMissing(ComputedError):
    """A request that could change something, authenticated by the console's cookie alone
    (a cross-site form could send that): the console's own calls carry the header."""
    code, status = "ConsoleHeaderMissing", 403


MISSING_HEADER = (f"a request authenticated by the console's session cookie that is not GET or HEAD must carry "
                  f"the header {HEADER}: 1")


@dataclass(frozen=True)
class Session:
    id: str
    access_key_id: str
    expires: dt.datetime


class Sessions:
    """Makes and checks session cookies with the key in KEY_PATH, read again when it was
    replaced (a rotation, by any process): before signing a login's cookie, and when a
    cookie's signature fails (a stat, then a read only if the file changed)."""

    def __init__(self, key_path: Path):
        self.key_path = key_path
        self._lock = threading.Lock()
        self._serializer: URLSafeSerializer | None = None
        self._identity: tuple[int, ...] | None = None

    def _load(self) -> URLSafeSerializer:
        keys, identity = read_keys(self.key_path, new_console_key)
        serializer = URLSafeSerializer(keys[0], salt=SALT)
        with self._lock:
            self._serializer, self._identity = serializer, identity
        return serializer

    def _signer(self, fresh: bool = False) -> URLSafeSerializer:
        if self._serializer is None or fresh and file_identity(self.key_path) != self._identity:
            return self._load()
        return self._serializer

    def issue(self, login: Login) -> tuple[str, Session]:
        """The cookie's value for a LOGIN the store has just opened (signed with the file's
        key as it is now, after the login's row was written: see ``key_rotation``)."""
        session = Session(login.id, login.access_key_id, login.expires_at)
        payload = {"s": login.id, "k": login.access_key_id, "e": int(login.expires_at.timestamp())}
        return self._signer(fresh=True).dumps(payload), session

    def _loads(self, token: str):
        try:
            return self._signer().loads(token)
        except BadData:
            pass
        return self._signer(fresh=True).loads(token)  # a key rotated since we read it

    def read(self, token: str, now: dt.datetime) -> Session | None:
        """The session TOKEN stands for, or None if it is not one of ours or has expired
        (whether the store still has it is ``current``'s question)."""
        try:
            data = self._loads(token)
        except BadData:  # a bad signature, or (ours, never) a bad payload
            return None
        if (not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("s", "k"))
                or type(data.get("e")) is not int):
            return None
        expires = dt.datetime.fromtimestamp(data["e"], dt.UTC)
        return Session(data["s"], data["k"], expires) if now < expires else None


def sessions() -> Sessions:
    app = current_app
    found = app.extensions.get(EXTENSION)
    if found is None:
        found = app.extensions.setdefault(EXTENSION, Sessions(service().settings.var_dir / KEY_FILE))
    return found


def current(token: str) -> Session | None:
    """The session of the cookie TOKEN if it is ours, unexpired and not logged out."""
    svc = service()
    session = sessions().read(token, svc.clock.now())
    if session is None or not svc.console_sessions.is_open(session.id, session.access_key_id):
        return None
    return session


def cookie_name() -> str:
    """The session cookie's name for this request: over HTTPS (as the request arrived, or as
    a trusted proxy says: the ``[api] trusted_proxies`` setting) the ``__Host-`` one, which
    is Secure; only that one counts there."""
    return SECURE_COOKIE if request.is_secure else COOKIE


def is_public(path: str, method: str) -> bool:
    """The console's page and assets, and logging in and out, need no credentials."""
    return (path in (PREFIX, PREFIX + "/") or path.startswith(ASSETS)
            or path == SESSION_PATH and method in ("POST", "DELETE"))


def applies(path: str) -> bool:
    """Whether the cookie may authenticate a request for PATH: the REST API and the console."""
    return path == "/v1" or path.startswith(("/v1/", PREFIX + "/"))
