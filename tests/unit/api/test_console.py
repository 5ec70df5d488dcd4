"""The web console's server side (api/console.py, api/console_session.py, the cookie in
api/auth.py), through Flask's test client on libvirt's test driver:

- the page and its assets are public, of the right types, under a strict CSP, never framed;
  the page has no inline script or style, and its scripts never write HTML from strings;
- logging in checks the access key as HTTP Basic does and sets a signed, HttpOnly,
  SameSite=Strict cookie holding a login kept in the store, the key id and an expiry, never
  the secret; anything wrong is one 401 AuthFailure with no cookie; logging out ends the
  login in the store, so no copy of the cookie counts any more, in any service process;
- the cookie authenticates /v1 and the console's calls (not the EC2 API or /metrics); one
  that could change something also needs the console's header (CSRF); the access key is
  looked up on every request, so a deleted key ends the session; a tampered, foreign or
  expired cookie is refused; an Authorization header wins over the cookie.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import re
import stat
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from itsdangerous import URLSafeSerializer
from sqlalchemy import delete, select

from api import console, console_session
from api.auth import FAILED
from computed.clock import FakeClock
from computed.store.models import AccessKey, ConsoleSession

HEADER = {console_session.HEADER: "1"}
COOKIE = console_session.COOKIE
STATIC = Path(console.__file__).with_name("console_static")
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def login(client, key_id: str, secret: str, headers=HEADER, **kwargs):
    return client.post("/console/session", json={"access_key_id": key_id, "secret_access_key": secret},
                       headers=headers, auth=None, **kwargs)


def set_cookie(response) -> SimpleCookie:
    headers = response.headers.getlist("Set-Cookie")
    assert len(headers) == 1, headers
    jar = SimpleCookie()
    jar.load(headers[0])
    return jar


def token_of(response) -> str:
    return set_cookie(response)[COOKIE].value


def with_cookie(token: str, **headers) -> dict:
    return {"Cookie": f"{COOKIE}={token}", **headers}


def bare(app):
    """A test client without a cookie jar (werkzeug's would replace a Cookie header sent)."""
    return app.test_client(use_cookies=False)


@pytest.fixture
def session(app):
    """(test client without a cookie jar, token): the test account logged in to the console."""
    client = bare(app)
    response = login(client, *app.config["TEST_AUTH"])
    assert response.status_code == 200, response.get_data(as_text=True)
    return client, token_of(response)


def assert_console_headers(response):
    csp = response.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["img-src"] == "'self' data:"
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert "unsafe" not in csp and "http" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


# -- the page and its assets -------------------------------------------------------------------

def test_page_and_assets_are_served_with_their_types_and_security_headers(client, case):
    page = client.get("/console/", auth=None)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert_console_headers(page)
    html = page.get_data(as_text=True)
    # everything the page loads is its own, by URL: no inline script or style, nothing remote
    assert re.findall(r"<script\b[^>]*>", html) == ['<script type="module" src="/console/assets/app.js">']
    assert "<style" not in html and " style=" not in html and not re.search(r"\son[a-z]+=", html)
    assert not re.search(r"(?:src|href)=\"(?:https?:)?//", html)

    assert client.get("/console", auth=None).headers["Location"].endswith("/console/")
    # every module the app imports, and every asset the page names
    assets = set(re.findall(r"/console/assets/([\w.-]+)", html))
    todo = ["app.js"]
    while todo:
        name = todo.pop()
        assets.add(name)
        source = (STATIC / "assets" / name).read_text()
        todo += [m for m in re.findall(r"from \"\./([\w.-]+)\"", source) if m not in assets]
    assert {"app.js", "console.css", "favicon.svg", "instances.js", "billing.js", "budget.js"} <= assets
    types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    for name in sorted(assets):
        with case(name):
            response = client.get(f"/console/assets/{name}", auth=None)
            assert response.status_code == 200
            assert response.mimetype == types[Path(name).suffix]
            assert_console_headers(response)
    for name in ("nope.js", "..%2Fconsole.py", "index.html", "APP.JS", "app.js.map"):
        with case(name):
            response = client.get(f"/console/assets/{name}", auth=None)
            assert response.status_code == 404
            assert_console_headers(response)


def test_scripts_never_write_html_from_strings():
    for path in sorted((STATIC / "assets").glob("*.js")):
        source = path.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                     "setAttribute(\"style", ".cssText", "http://", "https://"):
            assert sink not in source, f"{path.name} uses {sink}"


# -- logging in and out --------------------------------------------------------------------------

def test_login_sets_a_signed_session_cookie_without_the_secret(app, settings):
    client = bare(app)
    key_id, secret = app.config["TEST_AUTH"]
    caller = app.config["TEST_CALLER"]
    response = login(client, key_id, secret)
    assert response.status_code == 200
    assert response.get_json() | {"expires_at": None} == {
        "account_id": caller.account_id, "account_name": "tester", "admin": False, "access_key_id": key_id,
        "expires_at": None}
    assert_console_headers(response)

    morsel = set_cookie(response)[COOKIE]
    assert morsel["httponly"] is True and morsel["samesite"] == "Strict" and morsel["path"] == "/"
    assert not morsel["secure"]  # plain HTTP here: a Secure cookie would never come back
    assert int(morsel["max-age"]) == 12 * 3600
    header = response.headers["Set-Cookie"]
    token = morsel.value
    assert secret not in header
    payload = token.split(".")[0]
    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
    assert key_id in decoded and secret not in decoded  # the key id and an expiry, signed; no secret

    key_file = settings.var_dir / "secrets" / "console-session.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    over_https = login(app.test_client(), key_id, secret, base_url="https://localhost")
    assert set_cookie(over_https)[console_session.SECURE_COOKIE]["secure"] is True  # and __Host- (test_proxy.py)

    who = client.get("/console/session", auth=None, headers=with_cookie(token))
    assert who.status_code == 200 and who.get_json()["account_name"] == "tester"
    expires = dt.datetime.fromisoformat(who.get_json()["expires_at"])
    assert dt.timedelta(hours=11, minutes=59) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=12)


def test_wrong_credentials_are_one_auth_failure_and_set_nothing(app, expect_error, case, caplog):
    client = app.test_client()
    key_id, secret = app.config["TEST_AUTH"]
    caplog.set_level(logging.DEBUG)
    bodies = {
        "wrong secret": {"access_key_id": key_id, "secret_access_key": "w" * 40},
        "unknown key": {"access_key_id": "AKCD" + "Q" * 16, "secret_access_key": secret},
        "empty secret": {"access_key_id": key_id, "secret_access_key": ""},
        "secret as the key id": {"access_key_id": secret, "secret_access_key": key_id},
        "no secret": {"access_key_id": key_id},
        "numbers": {"access_key_id": 1, "secret_access_key": 2},
        "a NUL in the key id": {"access_key_id": "AKCD\x00" + "Q" * 15, "secret_access_key": secret},
        "not ASCII": {"access_key_id": "AKCDÄ" + "Q" * 15, "secret_access_key": "é" * 40},
    }
    for label, body in bodies.items():
        with case(label):
            response = client.post("/console/session", json=body, headers=HEADER, auth=None)
            assert expect_error(response, 401, "AuthFailure") == FAILED
            assert "Set-Cookie" not in response.headers
            assert "WWW-Authenticate" not in response.headers  # no browser dialog over the console's form
    assert client.get_cookie(COOKIE) is None
    assert expect_error(client.get("/console/session", auth=None), 401, "AuthFailure")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert secret not in logged and "w" * 40 not in logged


def test_login_and_logout_need_the_console_header(app, expect_error):
    client = app.test_client()
    key_id, secret = app.config["TEST_AUTH"]
    refused = login(client, key_id, secret, headers={})
    assert "X-Computed-Console" in expect_error(refused, 403, "ConsoleHeaderMissing")
    assert "Set-Cookie" not in refused.headers
    form = client.post("/console/session", data={"access_key_id": key_id, "secret_access_key": secret},
                       headers=HEADER, auth=None)
    expect_error(form, 415, "UnsupportedMediaType")
    expect_error(client.delete("/console/session", auth=None), 403, "ConsoleHeaderMissing")


def test_logout_clears_the_cookie(app, expect_error):
    client = app.test_client()  # with a cookie jar, as a browser
    assert login(client, *app.config["TEST_AUTH"]).status_code == 200
    assert client.get("/v1/instances", auth=None).status_code == 200
    response = client.delete("/console/session", headers=HEADER, auth=None)
    assert response.status_code == 204
    morsel = set_cookie(response)[COOKIE]
    assert morsel.value == "" and int(morsel["max-age"]) == 0
    assert client.get_cookie(COOKIE) is None
    expect_error(client.get("/v1/instances", auth=None), 401, "AuthFailure")


def test_logging_out_ends_the_session_everywhere(make_app, expect_error):
    """A copy of the cookie (another tab, or a stolen one) no longer counts after a logout,
    in this service process or another on the same store; another login of the same key
    is its own."""
    one, other = make_app(), make_app()
    client = bare(one)
    token = token_of(login(client, *one.config["TEST_AUTH"]))
    second = token_of(login(client, *one.config["TEST_AUTH"]))
    for app in (one, other):
        assert bare(app).get("/v1/instances", auth=None, headers=with_cookie(token)).status_code == 200
    assert bare(other).delete("/console/session", auth=None, headers=with_cookie(token, **HEADER)).status_code == 204
    for app in (one, other):
        for path in ("/v1/instances", "/console/session"):
            expect_error(bare(app).get(path, auth=None, headers=with_cookie(token)), 401, "AuthFailure")
        assert bare(app).get("/v1/instances", auth=None, headers=with_cookie(second)).status_code == 200
    # once more: nothing left to end, and the cookie is cleared all the same
    again = bare(one).delete("/console/session", auth=None, headers=with_cookie(token, **HEADER))
    assert again.status_code == 204 and set_cookie(again)[COOKIE].value == ""
    assert bare(one).delete("/console/session", auth=None, headers=HEADER).status_code == 204  # no cookie at all


def test_a_cookie_signed_by_the_service_counts_only_for_a_stored_login(make_app, expect_error, case):
    """The signature alone is not enough: the login it names must be in the store, for its key."""
    clock = FakeClock(T0)
    app = make_app(clock=clock)
    key_id, _ = app.config["TEST_AUTH"]
    token = token_of(login(bare(app), *app.config["TEST_AUTH"]))
    signer = app.extensions[console_session.EXTENSION]._signer()
    stored = signer.loads(token)
    bob = app.extensions["computed"].accounts.create("bob")
    expires = int((T0 + dt.timedelta(hours=1)).timestamp())
    forged = {
        "no login named": {"k": key_id, "e": expires},
        "a login never made": {"s": "0" * 32, "k": key_id, "e": expires},
        "the login with another key": {"s": stored["s"], "k": bob.access_key_id, "e": expires},
        "the login outliving its expiry": {"s": stored["s"], "k": key_id, "e": stored["e"] + 3600},
    }
    for label, payload in forged.items():
        with case(label):
            response = bare(app).get("/v1/instances", auth=None, headers=with_cookie(signer.dumps(payload)))
            if label == "the login outliving its expiry":  # the store's expiry is the one that counts
                assert response.status_code == 200
                clock.advance(hours=12)
                response = bare(app).get("/v1/instances", auth=None, headers=with_cookie(signer.dumps(payload)))
            assert expect_error(response, 401, "AuthFailure") == FAILED


def test_a_login_deletes_the_logins_that_expired(make_app):
    clock = FakeClock(T0)
    app = make_app(clock=clock)
    svc = app.extensions["computed"]

    def stored() -> set[str]:
        with svc.db.reading() as s:
            return set(s.scalars(select(ConsoleSession.id)))

    def login_id() -> str:
        token = token_of(login(bare(app), *app.config["TEST_AUTH"]))
        return app.extensions[console_session.EXTENSION].read(token, clock.now()).id

    first = login_id()
    clock.advance(hours=6)
    second = login_id()
    assert stored() == {first, second}
    clock.advance(hours=6)  # the first has just expired
    third = login_id()
    assert stored() == {second, third}


# -- the cookie as credentials ---------------------------------------------------------------------

def test_the_cookie_authenticates_reads_of_the_api(session, expect_error):
    client, token = session
    for path in ("/v1/instances", "/v1/sizes", "/v1/keypairs", "/console/session",
                 "/v1/billing/report?start=2026-03-01T00:00:00Z&end=2026-03-02T00:00:00Z&format=csv"):
        response = client.get(path, auth=None, headers=with_cookie(token))
        assert response.status_code == 200, (path, response.get_data(as_text=True))
    # not the EC2 API, not /metrics: those keep their own credentials
    for path in ("/?Action=DescribeInstances&Version=2016-11-15", "/metrics"):
        assert client.get(path, auth=None, headers=with_cookie(token)).status_code in (401, 403), path


def test_changes_with_the_cookie_alone_need_the_console_header(session, app, expect_error, case, wait):
    client, token = session
    svc = app.extensions["computed"]
    changes = [("POST", "/v1/instances", {"size": "t3.micro"}), ("POST", "/v1/keypairs", {"name": "k-csrf"}),
               ("PUT", "/v1/budget", {"amount": "5.00"}), ("DELETE", "/v1/keypairs/k-csrf", None),
               ("DELETE", "/v1/budget", None), ("POST", "/v1/instances/i-0123456789abcdef0/stop", None)]
    for method, path, body in changes:
        with case(f"{method} {path}"):
            response = client.open(path, method=method, json=body, auth=None, headers=with_cookie(token))
            assert "X-Computed-Console" in expect_error(response, 403, "ConsoleHeaderMissing")
            # a header with another value is no better
            response = client.open(path, method=method, json=body, auth=None,
                                   headers=with_cookie(token, **{console_session.HEADER: "yes"}))
            expect_error(response, 403, "ConsoleHeaderMissing")
    assert svc.instances.count() == 0
    assert client.get("/v1/keypairs", auth=None, headers=with_cookie(token)).get_json()["key_pairs"] == []

    launched = client.post("/v1/instances", json={"size": "t3.micro", "tags": {"Name": "web"}}, auth=None,
                           headers=with_cookie(token, **HEADER))
    assert launched.status_code == 202, launched.get_data(as_text=True)
    iid = launched.get_json()["instances"][0]["id"]
    wait()
    gone = client.delete(f"/v1/instances/{iid}", auth=None, headers=with_cookie(token, **HEADER))
    assert gone.status_code == 202
    wait()


def test_a_deleted_access_key_ends_the_session_at_once(session, app, expect_error):
    client, token = session
    svc = app.extensions["computed"]
    key_id, _ = app.config["TEST_AUTH"]
    assert client.get("/v1/instances", auth=None, headers=with_cookie(token)).status_code == 200
    with svc.db.session() as s:
        s.execute(delete(AccessKey).where(AccessKey.id == key_id))
    assert expect_error(client.get("/v1/instances", auth=None, headers=with_cookie(token)), 401,
                        "AuthFailure") == FAILED
    expect_error(client.get("/console/session", auth=None, headers=with_cookie(token)), 401, "AuthFailure")


def test_tampered_foreign_and_expired_cookies_are_refused(make_app, expect_error, case):
    clock = FakeClock(T0)
    app = make_app(clock=clock)
    client = bare(app)
    key_id, _ = app.config["TEST_AUTH"]
    token = token_of(login(client, *app.config["TEST_AUTH"]))
    payload, signature = token.rsplit(".", 1)
    other_key = URLSafeSerializer("not the service's key", salt=console_session.SALT)
    forged = {
        "signature changed": f"{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}",
        "payload changed": URLSafeSerializer("x").dumps({"k": "AKCD" + "Q" * 16, "e": 4102444800}).split(".")[0]
                           + "." + signature,
        "another key": other_key.dumps({"k": key_id, "e": int((T0 + dt.timedelta(hours=1)).timestamp())}),
        "garbage": "not-a-token",
        "empty": "",
    }
    for label, bad in forged.items():
        with case(label):
            response = client.get("/v1/instances", auth=None, headers=with_cookie(bad))
            assert expect_error(response, 401, "AuthFailure") == FAILED

    assert client.get("/v1/instances", auth=None, headers=with_cookie(token)).status_code == 200
    clock.advance(hours=11, minutes=59)
    assert client.get("/v1/instances", auth=None, headers=with_cookie(token)).status_code == 200
    clock.advance(minutes=1)
    expect_error(client.get("/v1/instances", auth=None, headers=with_cookie(token)), 401, "AuthFailure")


def test_an_authorization_header_wins_over_the_cookie(session, app, expect_error):
    client, token = session
    svc = app.extensions["computed"]
    bob = svc.accounts.create("bob")
    who = client.get("/console/session", auth=(bob.access_key_id, bob.secret_access_key),
                     headers=with_cookie(token))
    assert who.status_code == 200 and who.get_json()["account_name"] == "bob"
    # a POST with Basic credentials needs no console header, whatever cookie comes with it
    made = client.post("/v1/keypairs", json={"name": "k-bob"}, auth=(bob.access_key_id, bob.secret_access_key),
                       headers=with_cookie(token))
    assert made.status_code == 201
    mine = client.get("/v1/keypairs", auth=None, headers=with_cookie(token)).get_json()["key_pairs"]
    assert mine == []  # bob's, not the cookie's account
    wrong = client.get("/v1/instances", auth=(bob.access_key_id, "w" * 40), headers=with_cookie(token))
    expect_error(wrong, 401, "AuthFailure")
    bearer = client.get("/v1/instances", auth=None, headers=with_cookie(token, Authorization="Bearer x"))
    expect_error(bearer, 401, "AuthFailure")
