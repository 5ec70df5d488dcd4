"""Authentication and tenancy on the REST API.

- Every endpoint the OpenAPI document lists answers 401 ``AuthFailure`` (with no
  ``WWW-Authenticate: Basic`` challenge: api.csrf) to a request without valid credentials, and its
  message never says which part was wrong; the public pages need no credentials.
- Accounts see and act on their own instances, key pairs, client tokens and usage only;
  another account's resource answers exactly as one that does not exist. An admin sees all.
- Requests signed with AWS Signature Version 4 by botocore are accepted; a wrong secret,
  region or clock (the service's injected clock) is not.
- Secrets and Authorization headers never reach the logs or a response.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
from decimal import Decimal
from unittest import mock
from urllib.parse import urlencode

import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from api.auth import FAILED, MISSING
from computed.clock import FakeClock

IMAGE = "debian-12-podman"
UNKNOWN_INSTANCE = "i-0123456789abcdef0"  # well-formed, never launched
UNKNOWN_KEY_ID = "AKCD" + "Q" * 16         # well-formed, never issued
WRONG_SECRET = "w" * 40
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}
PUBLIC_PATHS = ("/health", "/openapi.json", "/docs")


# -- helpers ---------------------------------------------------------------------------------

def signed_in(app, creds):
    """A test client of APP that sends CREDS' access key (HTTP Basic) unless told otherwise."""
    client = app.test_client()
    default_open = client.open

    def open_(*args, **kwargs):
        kwargs.setdefault("auth", (creds.access_key_id, creds.secret_access_key))
        return default_open(*args, **kwargs)

    client.open = open_
    return client


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def sigv4(method: str, path: str, key_id: str, secret: str, region: str, *, body: bytes = b"",
          headers: dict | None = None, at: dt.datetime | None = None, service: str = "computed",
          expires: int | None = None) -> tuple[str, dict[str, str]]:
    """(path with query, headers) of a request botocore signs for http://localhost PATH at
    time AT (botocore's own clock if None); presigned in the query if EXPIRES is given."""
    request = AWSRequest(method=method, url=f"http://localhost{path}", data=body, headers=headers or {})
    creds = BotoCredentials(key_id, secret)
    signer = (SigV4Auth(creds, service, region) if expires is None
              else SigV4QueryAuth(creds, service, region, expires=expires))
    if at is None:
        signer.add_auth(request)
    else:
        stamp = at.astimezone(dt.UTC).replace(tzinfo=None)
        with mock.patch("botocore.auth.get_current_datetime", return_value=stamp):
            signer.add_auth(request)
    url = request.url.removeprefix("http://localhost")
    return url, {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}


def send_signed(client, method: str, path: str, key_id: str, secret: str, region: str, *, json_body=None,
                **sign_kwargs):
    """Sign with botocore and send through the Flask test client, without HTTP Basic."""
    body = b"" if json_body is None else json.dumps(json_body).encode()
    headers = {"Content-Type": "application/json"} if json_body is not None else {}
    url, headers = sigv4(method, path, key_id, secret, region, body=body, headers=headers, **sign_kwargs)
    return client.open(url, method=method, data=body, headers=headers, auth=None)


def endpoints(client) -> list[tuple[str, str]]:
    """(METHOD, path) of every operation in the OpenAPI document, with syntactically valid
    values in place of the path parameters."""
    response = client.get("/openapi.json", auth=None)
    assert response.status_code == 200
    found = []
    for template, operations in response.get_json()["paths"].items():
        path = (template.replace("{instance_id}", UNKNOWN_INSTANCE).replace("{name}", "k-nobody")
                .replace("{host_port}", "8080").replace("{access_key_id}", UNKNOWN_KEY_ID))
        assert "{" not in path, f"a path parameter this test does not know: {template}"
        found.extend((method.upper(), path) for method in operations if method in HTTP_METHODS)
    return found


def auth_failure(response, expect_error) -> str:
    """The message of a 401 AuthFailure, which invites no browser's Basic dialog."""
    message = expect_error(response, 401, "AuthFailure")
    assert "basic" not in response.headers.get("WWW-Authenticate", "").lower(), response.headers
    return message


def ids(response) -> set[str]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return {i["id"] for i in response.get_json()["instances"]}


def launch(client, **body) -> dict:
    body.setdefault("size", "t3.micro")
    response = client.post("/v1/instances", json=body)
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()


def settle(app) -> None:
    assert app.extensions["computed"].worker.idle(60), "background work still running after 60 s"


@pytest.fixture
def tenants(make_app):
    """app, a (the test client's account "tester"), b (account "bob") and root (an admin):
    test clients, each with ``.account_id``."""
    app = make_app()
    svc = app.extensions["computed"]
    a = app.test_client()
    a.account_id = app.config["TEST_CALLER"].account_id
    bob, root = svc.accounts.create("bob"), svc.accounts.create("root", admin=True)
    b, admin = signed_in(app, bob), signed_in(app, root)
    b.account_id, admin.account_id = bob.account_id, root.account_id
    return app, a, b, admin


# -- 1. every endpoint needs credentials -----------------------------------------------------

def test_every_endpoint_refuses_requests_without_valid_credentials(app, expect_error, case):
    client, svc = app.test_client(), app.extensions["computed"]
    key_id, secret = app.config["TEST_AUTH"]
    region = svc.settings.region
    operations = endpoints(client)
    assert ("POST", "/v1/instances") in operations and ("GET", "/v1/billing/report") in operations
    assert len(operations) >= 14

    no_colon = "Basic " + base64.b64encode(key_id.encode()).decode()
    missing, failed = set(), set()
    for method, path in operations:
        body = b'{"size": "t3.micro", "name": "k-1"}' if method == "POST" else b""
        attempts = {
            "unknown access key": {"auth": (UNKNOWN_KEY_ID, secret)},
            "wrong secret": {"auth": (key_id, WRONG_SECRET)},
            "empty secret": {"auth": (key_id, "")},
            "Basic, not base64": {"headers": {"Authorization": "Basic !!!not-base64!!!"}},
            "Basic without a colon": {"headers": {"Authorization": no_colon}},
            "SigV4, unknown key": {"headers": sigv4(method, path, UNKNOWN_KEY_ID, secret, region, body=body)[1]},
            "SigV4, wrong secret": {"headers": sigv4(method, path, key_id, WRONG_SECRET, region, body=body)[1]},
            "SigV4, malformed": {"headers": {"Authorization": "AWS4-HMAC-SHA256 Credential=garbage"}},
        }
        with case(f"{method} {path}, no credentials"):
            response = client.open(path, method=method, data=body, content_type="application/json", auth=None)
            missing.add(auth_failure(response, expect_error))
        for label, kwargs in attempts.items():
            with case(f"{method} {path}, {label}"):
                kwargs = {"auth": None} | kwargs
                response = client.open(path, method=method, data=body, content_type="application/json", **kwargs)
                message = auth_failure(response, expect_error)
                assert key_id not in message and secret not in message
                failed.add(message)

    assert failed == {FAILED}  # one message, whatever was wrong
    assert missing == {MISSING} and missing != failed
    assert "HTTP Basic" in MISSING and "Signature Version 4" in MISSING
    # nothing was done on the refused requests' behalf
    assert svc.instances.count() == 0
    assert client.get("/v1/keypairs").get_json()["key_pairs"] == []


@pytest.mark.parametrize("header", [
    "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig", "Digest username=x", "Negotiate abc", "Token abc",
    "AWS AKCDQQQQQQQQQQQQQQQQ:c2lnbmF0dXJl",  # SigV2-style: claims AWS auth, never valid
])
def test_other_schemes_are_refused(client, expect_error, header):
    response = client.get("/v1/instances", auth=None, headers={"Authorization": header})
    assert auth_failure(response, expect_error) in (MISSING, FAILED)


def test_public_pages_need_no_credentials(app):
    client = app.test_client()
    key_id, _ = app.config["TEST_AUTH"]
    for path in PUBLIC_PATHS:
        for auth in (None, (key_id, WRONG_SECRET)):  # bad credentials are not even looked at
            response = client.get(path, auth=auth)
            assert response.status_code == 200, (path, auth, response.get_data(as_text=True))
    assert client.get("/health", auth=None).get_json()["status"] == "ok"
    assert "paths" in client.get("/openapi.json", auth=None).get_json()
    assert client.get("/docs", auth=None).mimetype == "text/html"


def test_good_basic_credentials_are_accepted(client):
    assert client.get("/v1/instances").status_code == 200
    assert client.get("/v1/sizes").status_code == 200


# -- 2. tenancy ------------------------------------------------------------------------------

INSTANCE_CALLS = [("GET", ""), ("DELETE", ""), ("POST", "/stop"), ("POST", "/start"), ("POST", "/reboot"),
                  ("GET", "/console")]


def test_another_accounts_instance_answers_as_nonexistent(tenants, expect_error, case):
    app, a, b, _ = tenants
    iid = launch(a, tags={"team": "a"})["instances"][0]["id"]
    settle(app)
    for method, suffix in INSTANCE_CALLS:
        with case(f"{method} {suffix or '/'}"):
            hidden = b.open(f"/v1/instances/{iid}{suffix}", method=method)
            missing = b.open(f"/v1/instances/{UNKNOWN_INSTANCE}{suffix}", method=method)
            expect_error(hidden, 404, "InvalidInstanceID.NotFound")
            expect_error(missing, 404, "InvalidInstanceID.NotFound")
            assert hidden.get_json() == json.loads(missing.get_data(as_text=True).replace(UNKNOWN_INSTANCE, iid))
    # none of B's calls did anything to it
    mine = a.get(f"/v1/instances/{iid}").get_json()
    assert mine["state"]["name"] == "running" and mine["owner"] == a.account_id


def test_listings_show_only_the_callers_instances(tenants):
    app, a, b, _ = tenants
    assert a.post("/v1/keypairs", json={"name": "a-key"}).status_code == 201
    theirs = launch(a, key_name="a-key", tags={"team": "a"})["instances"][0]["id"]
    mine = launch(b, tags={"team": "b"})["instances"][0]["id"]
    settle(app)
    assert ids(a.get("/v1/instances")) == {theirs}
    assert ids(b.get("/v1/instances")) == {mine}
    for query in ("state=running", "size=t3.micro", f"image={IMAGE}", "tag=team", "tag=team=a",
                  "key_name=a-key", "limit=1"):
        assert theirs not in ids(b.get(f"/v1/instances?{query}")), query
    assert ids(b.get("/v1/instances?tag=team=a")) == set()
    assert ids(a.get("/v1/instances?tag=team=a")) == {theirs}


def test_key_pairs_are_per_account(tenants, expect_error):
    app, a, b, admin = tenants
    created = a.post("/v1/keypairs", json={"name": "shared"})
    assert created.status_code == 201
    fingerprint = created.get_json()["fingerprint"]

    for method in ("GET", "DELETE"):
        hidden = b.open("/v1/keypairs/shared", method=method)
        missing = b.open("/v1/keypairs/no-such-key", method=method)
        expect_error(hidden, 404, "InvalidKeyPair.NotFound")
        assert hidden.get_json() == json.loads(missing.get_data(as_text=True).replace("no-such-key", "shared"))
    assert b.get("/v1/keypairs").get_json()["key_pairs"] == []
    assert admin.get("/v1/keypairs").get_json()["key_pairs"] == []  # an admin too has only its own

    refused = b.post("/v1/instances", json={"size": "t3.micro", "key_name": "shared"})
    assert "shared" in expect_error(refused, 400, "InvalidKeyPair.NotFound")
    assert app.extensions["computed"].instances.count() == 0

    own = b.post("/v1/keypairs", json={"name": "shared"})  # the same name: B's own pair
    assert own.status_code == 201 and own.get_json()["fingerprint"] != fingerprint
    assert b.delete("/v1/keypairs/shared").status_code == 204
    assert a.get("/v1/keypairs/shared").get_json()["fingerprint"] == fingerprint


def test_an_admin_sees_and_acts_on_every_account(tenants):
    app, a, b, admin = tenants
    theirs = launch(a)["instances"][0]["id"]
    bobs = launch(b)["instances"][0]["id"]
    settle(app)
    assert {theirs, bobs} <= ids(admin.get("/v1/instances"))
    owners = {i["id"]: i["owner"] for i in admin.get("/v1/instances").get_json()["instances"]}
    assert owners == {theirs: a.account_id, bobs: b.account_id}
    shown = admin.get(f"/v1/instances/{theirs}")
    assert shown.status_code == 200 and shown.get_json()["owner"] == a.account_id

    stopped = admin.post(f"/v1/instances/{theirs}/stop")
    assert stopped.status_code == 202 and stopped.get_json()["state"]["name"] == "stopping"
    settle(app)
    assert a.get(f"/v1/instances/{theirs}").get_json()["state"]["name"] == "stopped"
    assert admin.get(f"/v1/instances/{theirs}/console").status_code == 200
    assert admin.delete(f"/v1/instances/{bobs}").status_code == 202
    settle(app)
    assert b.get(f"/v1/instances/{bobs}").get_json()["state"]["name"] == "terminated"


def test_client_tokens_are_per_account(tenants):
    app, a, b, _ = tenants
    body = {"size": "t3.nano", "client_token": "same-token"}
    first_a, first_b = launch(a, **body), launch(b, **body)
    assert first_a["reservation_id"] != first_b["reservation_id"]
    again_a, again_b = launch(a, **body), launch(b, **body)
    assert again_a["reservation_id"] == first_a["reservation_id"]
    assert again_b["reservation_id"] == first_b["reservation_id"]
    assert [i["id"] for i in again_a["instances"]] == [i["id"] for i in first_a["instances"]]
    settle(app)
    assert ids(a.get("/v1/instances")) == {first_a["instances"][0]["id"]}
    assert ids(b.get("/v1/instances")) == {first_b["instances"][0]["id"]}


# -- 2b. admin-only operations ---------------------------------------------------------------

HOST_OPERATIONS = {("GET", "/v1/hosts"), ("POST", "/v1/hosts"), ("GET", "/v1/hosts/{name}"),
                   ("DELETE", "/v1/hosts/{name}"), ("POST", "/v1/hosts/{name}/disable"),
                   ("POST", "/v1/hosts/{name}/enable"), ("POST", "/v1/hosts/{name}/rotate-key")}
#: operations anyone may call for their own account, and only an admin for another's (the
#: 403 of naming another account: tests/unit/billing/test_api_budgets.py,
#: tests/unit/api/test_api_access_keys.py)
OTHER_ACCOUNTS_OPERATIONS = {("GET", "/v1/budget"), ("PUT", "/v1/budget"), ("DELETE", "/v1/budget"),
                             ("GET", "/v1/budget/events"), ("GET", "/v1/account/access-keys"),
                             ("POST", "/v1/account/access-keys")}


def test_admin_only_operations_refuse_other_accounts(tenants, expect_error, case, node_uri):
    app, a, b, admin = tenants
    doc = a.get("/openapi.json").get_json()
    # an operation only admins may call says so with its 403: these, and no other
    listing_403 = {(method.upper(), path) for path, item in doc["paths"].items() for method, op in item.items()
                   if method in HTTP_METHODS and "403" in op["responses"]}
    assert listing_403 == HOST_OPERATIONS | OTHER_ACCOUNTS_OPERATIONS
    only_admins = HOST_OPERATIONS
    hosts = lambda: {h["name"]: h["enabled"] for h in admin.get("/v1/hosts").get_json()["hosts"]}  # noqa: E731
    before = hosts()
    assert before == {"local": True}
    good = {"name": "node-2", "uri": node_uri()}  # an add that works, for an admin
    bodies = {"a good body": good, "a bad body": {"name": "Not A Host", "uri": "nowhere", "enabled": "maybe"}}
    for who, client in (("tester", a), ("bob", b)):
        for method, template in sorted(only_admins):
            for name in ("local", "no-such-host"):  # whether the host exists is no business of theirs
                path = template.replace("{name}", name)
                for label, body in bodies.items() if (method, template) == ("POST", "/v1/hosts") else [("", None)]:
                    with case(f"{who}: {method} {path} {label}"):
                        response = client.open(path, method=method, json=body)
                        assert "admin" in expect_error(response, 403, "UnauthorizedOperation")
    assert hosts() == before  # nothing was done on their behalf
    assert app.extensions["computed"].hosts.list()[0].host.enabled

    # the same calls from an admin
    assert admin.post("/v1/hosts", json=good).status_code == 201
    assert admin.post("/v1/hosts/node-2/disable").get_json()["enabled"] is False
    assert admin.get("/v1/hosts/node-2").status_code == 200
    assert admin.post("/v1/hosts/node-2/enable").get_json()["enabled"] is True
    assert admin.post("/v1/hosts/node-2/rotate-key").get_json()["host"] == "node-2"
    assert admin.delete("/v1/hosts/node-2").status_code == 204
    assert hosts() == before


# -- 3. billing ------------------------------------------------------------------------------

T0 = dt.datetime(2026, 3, 1, 10, 0, tzinfo=dt.UTC)
DAY = "start=2026-03-01T00:00:00Z&end=2026-03-02T00:00:00Z"


def report(client, query: str = "") -> dict:
    response = client.get(f"/v1/billing/report?{DAY}&group_by=owner{query}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def billed(body: dict) -> tuple[set[str], set[str], Decimal]:
    """(instance ids, owners, total USD) of a report."""
    total = sum((Decimal(t["cost"]) for t in body["total"] if t["currency"] == "USD"), Decimal(0))
    return {r["instance_id"] for r in body["rows"]}, {r["owner"] for r in body["rows"]}, total


def test_billing_reports_cover_the_callers_usage(make_app, expect_error):
    clock = FakeClock(T0)
    app = make_app(clock=clock)
    svc = app.extensions["computed"]
    a = app.test_client()
    a_id = app.config["TEST_CALLER"].account_id
    bob, root = svc.accounts.create("bob"), svc.accounts.create("root", admin=True)
    b, admin = signed_in(app, bob), signed_in(app, root)
    a_iid = launch(a)["instances"][0]["id"]
    b_iid = launch(b, size="t3.small")["instances"][0]["id"]
    settle(app)
    clock.advance(hours=2)

    a_ids, a_owners, a_total = billed(report(a))
    b_ids, b_owners, b_total = billed(report(b))
    assert (a_ids, a_owners) == ({a_iid}, {a_id})
    assert (b_ids, b_owners) == ({b_iid}, {bob.account_id})
    assert a_total > 0 and b_total > a_total  # a t3.small costs more than a t3.micro

    everything = report(admin)
    assert billed(everything) == ({a_iid, b_iid}, {a_id, bob.account_id}, a_total + b_total)
    assert {t["key"] for t in everything["totals"]["owner"]} == {a_id, bob.account_id}
    assert billed(report(admin, f"&account={a_id}")) == ({a_iid}, {a_id}, a_total)
    assert billed(report(admin, f"&account={bob.account_id}")) == ({b_iid}, {bob.account_id}, b_total)
    assert billed(report(admin, "&account=999999999999")) == (set(), set(), Decimal(0))

    for account in (bob.account_id, a_id):  # even its own id: only an admin names an account
        response = a.get(f"/v1/billing/report?{DAY}&account={account}")
        assert "admin" in expect_error(response, 400, "InvalidParameterValue")
    csv_text = a.get(f"/v1/billing/report?{DAY}&format=csv").get_data(as_text=True)
    assert a_iid in csv_text and b_iid not in csv_text and bob.account_id not in csv_text


# -- 4. SigV4 on the REST API ----------------------------------------------------------------

@pytest.fixture
def signing(make_app):
    """(app, clock, sign(method, path, **kwargs) -> response): requests signed with the
    test account's key at the service clock's time unless given ``at``."""
    clock = FakeClock(dt.datetime.now(dt.UTC).replace(microsecond=0))
    app = make_app(clock=clock)
    client = app.test_client()
    key_id, secret = app.config["TEST_AUTH"]
    region = app.extensions["computed"].settings.region

    def sign(method, path, *, key=key_id, secret=secret, region=region, at=None, **kwargs):
        return send_signed(client, method, path, key, secret, region, at=at or clock.now(), **kwargs)

    return app, clock, sign


def test_sigv4_signed_requests_are_accepted(signing):
    app, _, sign = signing
    me = app.config["TEST_CALLER"].account_id
    listed = sign("GET", "/v1/instances")
    assert listed.status_code == 200 and listed.get_json()["instances"] == []

    launched = sign("POST", "/v1/instances", json_body={"size": "t3.nano", "tags": {"via": "sigv4"}})
    assert launched.status_code == 202, launched.get_data(as_text=True)
    iid = launched.get_json()["instances"][0]["id"]
    assert launched.get_json()["instances"][0]["owner"] == me
    settle(app)

    shown = sign("GET", f"/v1/instances/{iid}")
    assert shown.status_code == 200 and shown.get_json()["tags"] == {"via": "sigv4"}
    # the query as clients send it: each value percent-encoded (an "=" in a value is %3D)
    query = urlencode({"state": "running", "tag": "via=sigv4", "limit": 5})
    assert iid in ids(sign("GET", f"/v1/instances?{query}"))
    assert sign("POST", f"/v1/instances/{iid}/stop").status_code == 202
    assert sign("POST", "/v1/keypairs", json_body={"name": "k-signed"}).status_code == 201
    assert sign("GET", "/v1/keypairs/k-signed").status_code == 200
    assert sign("GET", "/v1/instances", service="ec2").status_code == 200  # the EC2 API's scope is ours too
    # presigned URLs (the signature in the query string, beside the query's own arguments)
    assert sign("GET", "/v1/instances", expires=300).status_code == 200
    assert iid in ids(sign("GET", "/v1/instances?" + urlencode({"size": "t3.nano", "tag": "via=sigv4"}), expires=300))
    assert sign("GET", f"/v1/instances/{iid}", expires=300).status_code == 200
    csv_report = sign("GET", f"/v1/billing/report?{DAY}&format=csv&group_by=size", expires=300)
    assert csv_report.status_code == 200 and csv_report.mimetype == "text/csv"
    unknown = sign("GET", "/v1/instances?colour=red", expires=300)  # signed, but still no such argument
    assert unknown.status_code == 400 and "colour" in unknown.get_json()["error"]["message"]
    assert sign("DELETE", f"/v1/instances/{iid}").status_code == 202


def test_sigv4_failures_are_auth_failures(signing, expect_error, case):
    app, clock, sign = signing
    now = clock.now()
    cases = {
        "wrong secret": {"secret": WRONG_SECRET},
        "unknown key": {"key": UNKNOWN_KEY_ID},
        "wrong region": {"region": "eu-west-1"},
        "wrong service": {"service": "s3"},
        "16 minutes behind": {"at": now - dt.timedelta(minutes=16)},
        "16 minutes ahead": {"at": now + dt.timedelta(minutes=16)},
        "presigned, expired": {"at": now - dt.timedelta(minutes=10), "expires": 60},
    }
    for label, kwargs in cases.items():
        for method, path in (("GET", "/v1/instances"), ("GET", f"/v1/instances/{UNKNOWN_INSTANCE}")):
            with case(f"{label}: {method} {path}"):
                assert auth_failure(sign(method, path, **kwargs), expect_error) == FAILED
    with case("launch, wrong region"):
        refused = sign("POST", "/v1/instances", json_body={"size": "t3.nano"}, region="eu-west-1")
        assert auth_failure(refused, expect_error) == FAILED
    # within the 15 minutes allowed, either way
    for minutes in (-14, 14):
        assert sign("GET", "/v1/instances", at=now + dt.timedelta(minutes=minutes)).status_code == 200
    assert app.extensions["computed"].instances.count() == 0


def test_sigv4_body_and_path_are_signed(signing, expect_error):
    app, clock, _ = signing
    client = app.test_client()
    key_id, secret = app.config["TEST_AUTH"]
    region = app.extensions["computed"].settings.region
    body = json.dumps({"size": "t3.nano"}).encode()
    _, headers = sigv4("POST", "/v1/instances", key_id, secret, region, body=body,
                       headers={"Content-Type": "application/json"}, at=clock.now())
    tampered = client.post("/v1/instances", data=body.replace(b"nano", b"large"), headers=headers, auth=None)
    assert auth_failure(tampered, expect_error) == FAILED
    _, headers = sigv4("GET", "/v1/instances", key_id, secret, region, at=clock.now())
    elsewhere = client.get("/v1/keypairs", headers=headers, auth=None)
    assert auth_failure(elsewhere, expect_error) == FAILED
    assert app.extensions["computed"].instances.count() == 0


# -- 5. secrets stay secret ------------------------------------------------------------------

def test_secrets_never_reach_logs_or_responses(app, caplog):
    client, svc = app.test_client(), app.extensions["computed"]
    key_id, secret = app.config["TEST_AUTH"]
    region = svc.settings.region
    # sign before logging at DEBUG: botocore itself logs the signature it computes
    good_sig = sigv4("GET", "/v1/instances", key_id, secret, region)
    bad_sig = sigv4("GET", "/v1/instances", key_id, WRONG_SECRET, region)
    bad_launch = sigv4("POST", "/v1/instances", UNKNOWN_KEY_ID, secret, region, body=b'{"size": "t3.nano"}',
                       headers={"Content-Type": "application/json"})
    authorizations = [basic(key_id, secret), basic(key_id, WRONG_SECRET), basic(UNKNOWN_KEY_ID, secret),
                      good_sig[1]["Authorization"], bad_sig[1]["Authorization"], bad_launch[1]["Authorization"]]

    caplog.set_level(logging.DEBUG)
    responses = [client.get(url, headers=headers, auth=None) for url, headers in (good_sig, bad_sig)]
    responses.append(client.post(bad_launch[0], data=b'{"size": "t3.nano"}', headers=bad_launch[1], auth=None))
    for header in authorizations[:3]:
        responses.append(client.get("/v1/instances", headers={"Authorization": header}, auth=None))
    responses.append(client.post("/v1/instances", json={"size": "t3.nano"}))  # Basic, good
    responses.append(client.post("/v1/keypairs", json={"name": "k-logged"}))
    settle(app)
    iid = responses[-2].get_json()["instances"][0]["id"]
    for path in ("/v1/instances", f"/v1/instances/{iid}", f"/v1/instances/{iid}/console", "/v1/keypairs",
                 "/v1/keypairs/k-logged", "/v1/sizes", "/v1/images", f"/v1/billing/report?{DAY}",
                 f"/v1/billing/report?{DAY}&format=csv", "/health", "/openapi.json", "/docs"):
        response = client.get(path)
        assert response.status_code == 200, path
        responses.append(response)
    assert [r.status_code for r in responses[:6]] == [200, 401, 401, 200, 401, 401]

    assert caplog.records, "nothing was logged: the check below would prove nothing"
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    logged = "\n".join(formatter.format(r) + repr(r.args) for r in caplog.records)
    for text in (secret, WRONG_SECRET, *authorizations, *(a.split(None, 1)[1] for a in authorizations)):
        assert text not in logged
    for response in responses:
        assert secret.encode() not in response.get_data()
