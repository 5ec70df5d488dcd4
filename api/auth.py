"""Who is calling: every request but the public pages (health, the OpenAPI document and
its docs page; /metrics with the ``[metrics] public`` setting) carries credentials, checked
before the view runs.

- HTTP Basic: the access key id as user name, the secret as password (``curl -u``); on
  the EC2 API for read-only actions only (``api.csrf``). No 401 asks for it
  (``WWW-Authenticate: Basic``): a browser would cache it for other sites' pages to use.
- AWS Signature Version 4, in the ``Authorization`` header or a presigned query string
  (boto3, the AWS CLI), for the REST and the EC2 API alike.
- The web console's session cookie (``api.console_session``), for ``/v1`` and the console
  only, when no ``Authorization`` header is sent; a request that may change something also
  needs the console's header (CSRF). The console's page, assets and login are public.

Failures are limited per source and per key id (``api.ratelimit``: 429 past the limit).
Any failure is ``AuthFailure`` (401) with one message whatever went wrong: an unknown,
deleted or inactive key, a wrong secret or signature, a clock skew over 15 minutes, an
expired presigned URL. The key is read from the store at every request (nothing is
cached), so a key deleted or deactivated in any service process fails in all at once; a
success records the key's last use, at most once a minute (``computed.accounts.access_keys``)."""

from __future__ import annotations

import hmac
import logging

from flask import Flask, g, request

from computed.accounts.registry import Caller, KeyLookup
from computed.errors import AuthFailure

from . import console_session, csrf, ratelimit, sigv4
from .service import service

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/health", "/openapi.json", "/docs"})
#: public too with the ``[metrics] public`` setting (else for admins: api.metrics)
METRICS_PATH = "/metrics"
#: SigV4 credential scopes accepted: the EC2 API's, and ours for the REST API
SERVICES = frozenset({"ec2", "computed"})
FAILED = "AWS was not able to validate the provided access credentials"
MISSING = "this request needs credentials: HTTP Basic (access key id and secret) or AWS Signature Version 4"


def current_caller() -> Caller:
    return g.caller


def _used(found: KeyLookup, through: str | None = None) -> Caller:
    """FOUND's caller, its key's use recorded (through the API this request is for, or THROUGH)."""
    if through is None:
        ec2 = not (request.path == "/v1" or request.path.startswith(("/v1/", "/console", METRICS_PATH)))
        through = "ec2" if ec2 else "rest"
    service().access_keys.record_use(found.caller.access_key_id, through, found.last_used_at)
    return found.caller


def check_secret(access_key_id: str, secret: str, through: str | None = None) -> Caller:
    """The caller whose active access key this is, if SECRET is its secret; else AuthFailure."""
    # only what could be a key id reaches the store (PostgreSQL refuses to compare a NUL)
    possible = access_key_id.isascii() and access_key_id.isalnum()
    found = service().accounts.find(access_key_id) if possible else None
    # compare even for an unknown key, so the answer takes as long either way
    expected = found.secret if found else "-" * 40
    if not hmac.compare_digest(secret.encode(), expected.encode()) or found is None:
        raise AuthFailure(FAILED)
    return _used(found, through)


def _basic() -> Caller:
    auth = request.authorization
    return check_secret(auth.username or "", auth.password or "")


def _session(token: str) -> Caller:
    """The console's cookie: its login still in the store (not logged out, its key not
    deactivated or deleted since) and its access key looked up again, active."""
    session = console_session.current(token)
    found = service().accounts.find(session.access_key_id) if session else None
    if found is None:
        raise AuthFailure(FAILED)
    if request.method not in console_session.SAFE_METHODS and request.headers.get(console_session.HEADER) != "1":
        raise console_session.ConsoleHeaderMissing(console_session.MISSING_HEADER)
    return _used(found, "console")


def _signed(query: list[tuple[str, str]]) -> Caller:
    svc = service()
    found_keys: dict[str, KeyLookup] = {}

    def secret_for(access_key_id: str) -> str | None:
        found = svc.accounts.find(access_key_id)
        if found is None:
            return None
        found_keys[access_key_id] = found
        return found.secret

    try:
        signed = sigv4.verify(request.method, sigv4.wsgi_path(request.environ), query, request.headers,
                              request.get_data(cache=True), secret_for=secret_for, region=svc.settings.region,
                              services=SERVICES, now=svc.clock.now())
    except sigv4.SignatureError as e:
        log.info("refused a SigV4 request: %s", e)  # for the operator; never the secret
        raise AuthFailure(FAILED) from None
    return _used(found_keys[signed.access_key_id])


def authenticate() -> None:
    if request.path in PUBLIC_PATHS or request.method == "OPTIONS" and request.path.startswith("/docs"):
        return
    if request.path == METRICS_PATH and service().settings.metrics_public:
        return
    if console_session.is_public(request.path, request.method):
        return
    query = sigv4.parse_query(request.query_string)
    if sigv4.is_signed(request.headers, query):
        with ratelimit.counted(ratelimit.signed_key_id(query)):
            g.caller = _signed(query)
    elif request.authorization is not None and request.authorization.type == "basic":
        csrf.refuse_basic_for_ec2_changes()
        with ratelimit.counted(request.authorization.username):
            g.caller = _basic()
    elif request.headers.get("Authorization", "").strip()[:6].lower() == "basic ":
        with ratelimit.counted(None):  # Basic credentials werkzeug cannot decode: wrong, not missing
            raise AuthFailure(FAILED)
    elif ("Authorization" not in request.headers and console_session.cookie_name() in request.cookies
          and console_session.applies(request.path)):
        g.caller = _session(request.cookies[console_session.cookie_name()])
    else:
        raise AuthFailure(MISSING)


def register(app: Flask) -> None:
    app.before_request(authenticate)
