"""``/console/``: the web console, served by the API's own process from files that ship
with the package (``api/console_static``: HTML, CSS and JavaScript modules; no build step,
nothing from elsewhere). The page calls the REST API under ``/v1`` with the session cookie
``POST /console/session`` sets (``api.console_session``).

Every response under ``/console`` carries a strict Content-Security-Policy (scripts, styles
and everything else from this origin only; no inline script or style), and may not be
framed or sniffed. A plain Flask blueprint: it stays out of the OpenAPI document."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from flask import (
    Blueprint,
    Flask,
    Response,
    jsonify,
    redirect,
    request,
    send_from_directory,
)
from werkzeug.exceptions import NotFound, UnsupportedMediaType

from computed.accounts.registry import Caller
from computed.errors import AuthFailure, InvalidParameterValue

from . import console_session, ratelimit
from .auth import FAILED, check_secret, current_caller
from .console_session import (
    HEADER,
    LIFETIME,
    MISSING_HEADER,
    ConsoleHeaderMissing,
    sessions,
)
from .service import service

log = logging.getLogger(__name__)

blp = Blueprint("console", __name__)

STATIC = Path(__file__).with_name("console_static")
#: the asset types served, by suffix; any other file is not found
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
ASSET_NAME = re.compile(r"[a-z0-9][a-z0-9-]*\.(?:js|css|svg)")

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@blp.get("/console")
def console_redirect():
    return redirect("/console/", code=308)


@blp.get("/console/")
def index():
    response = send_from_directory(STATIC, "index.html", mimetype="text/html")
    response.headers["Cache-Control"] = "no-cache"
    return response


@blp.get("/console/assets/<string:name>")
def asset(name: str):
    if not ASSET_NAME.fullmatch(name) or not (STATIC / "assets" / name).is_file():
        raise NotFound(f"no console asset {name!r}")
    response = send_from_directory(STATIC / "assets", name, mimetype=TYPES[Path(name).suffix])
    response.headers["Cache-Control"] = "no-cache"  # revalidated (ETag): a new version shows at once
    return response


def _who(caller: Caller, session: console_session.Session | None) -> dict:
    return {"account_id": caller.account_id, "account_name": caller.name, "admin": caller.admin,
            "access_key_id": session.access_key_id if session else None,
            "expires_at": session.expires.strftime("%Y-%m-%dT%H:%M:%SZ") if session else None}


def _require_header() -> None:
    """Logging in and out come from the console's own script only (a cross-site form cannot
    send the header): no one else's page can log a visitor in to an account of theirs."""
    if request.headers.get(HEADER) != "1":
        raise ConsoleHeaderMissing(MISSING_HEADER)


@blp.post("/console/session")
def login():
    """Log in with an access key id and its secret (JSON); the answer sets the session
    cookie. Anything wrong is one AuthFailure."""
    _require_header()
    if not request.is_json:
        raise UnsupportedMediaType(f"the body must be application/json (it is {request.mimetype or 'of no type'})")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidParameterValue("the body must be a JSON object with access_key_id and secret_access_key")
    key_id, secret = body.get("access_key_id"), body.get("secret_access_key")
    if not isinstance(key_id, str) or not isinstance(secret, str):
        raise AuthFailure(FAILED)
    try:
        with ratelimit.counted(key_id.strip()):
            caller = check_secret(key_id.strip(), secret, through="console")
    except AuthFailure:
        log.info("refused a console login from %s", request.remote_addr)  # never the key id or secret
        raise
    token, session = sessions().issue(service().console_sessions.open(key_id.strip(), LIFETIME))
    response = jsonify(_who(caller, session))
    response.set_cookie(console_session.cookie_name(), token, max_age=int(LIFETIME.total_seconds()), expires=session.expires, path="/",
                        secure=request.is_secure, httponly=True, samesite="Strict")
    log.info("console login: account %s", caller.name)
    return response


@blp.get("/console/session")
def whoami():
    """Who is logged in, and until when (the cookie's session); 401 if no one."""
    token = request.cookies.get(console_session.cookie_name())
    return _who(current_caller(), console_session.current(token) if token else None)


@blp.delete("/console/session")
def logout():
    """Log out: the session ends in the store, so a copy of the cookie no longer counts
    either, and the cookie is deleted. Without a live session, only the latter."""
    _require_header()
    token = request.cookies.get(console_session.cookie_name())
    session = console_session.current(token) if token else None
    if session is not None:
        service().console_sessions.close(session.id)
        log.info("console logout")
    response = Response(status=204)
    response.delete_cookie(console_session.cookie_name(), path="/", secure=request.is_secure, httponly=True, samesite="Strict")
    return response


def _headers(response: Response) -> Response:
    if request.path == console_session.PREFIX or request.path.startswith(console_session.PREFIX + "/"):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
    return response


def register(app: Flask) -> None:
    app.register_blueprint(blp)
    app.after_request(_headers)
