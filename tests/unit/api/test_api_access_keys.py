"""Access keys through the REST API (``/v1/account/access-keys``), as IAM has them:

- an account makes a second key (its secret shown once) and no third (409 LimitExceeded);
  lists them (status, created, last use; never a secret), deactivates, reactivates and
  deletes them; an admin does so for any account;
- an inactive or deleted key fails at its very next request, over HTTP Basic, SigV4 (REST
  and the EC2 API, through boto3) and the console's cookie, whose logins end with it;
- the account's last active key goes only with ``force``; the key a request is signed
  with may be deleted by that request, which is answered;
- another account's key id answers exactly as one that does not exist;
- a key's last use is recorded, and written at most once a minute (counted UPDATEs).
"""

from __future__ import annotations

import datetime as dt
import threading

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from sqlalchemy import event
from werkzeug.serving import make_server

from api.auth import FAILED
from computed.clock import FakeClock
from tests.unit.api.test_api_auth import send_signed, signed_in
from tests.unit.api.test_console import HEADER, bare, login, token_of, with_cookie

PATH = "/v1/account/access-keys"
UNKNOWN_KEY_ID = "AKCD" + "Q" * 16
KEY_FIELDS = {"access_key_id", "account_id", "account_name", "status", "created_at", "last_used_at",
              "last_used_service", "current"}
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


class Creds:
    def __init__(self, access_key_id: str, secret_access_key: str):
        self.access_key_id, self.secret_access_key = access_key_id, secret_access_key


def keys(client, **query) -> dict[str, dict]:
    response = client.get(PATH, query_string=query)
    assert response.status_code == 200, response.get_data(as_text=True)
    return {k["access_key_id"]: k for k in response.get_json()["access_keys"]}


def make_key(client, **query) -> dict:
    response = client.post(PATH, query_string=query)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def patch(client, key_id: str, status: str, **query):
    return client.patch(f"{PATH}/{key_id}", json={"status": status}, query_string=query)


@pytest.fixture
def accounts(make_app):
    """(app, tester's client, tester's key id, bob's client and credentials, an admin's client)."""
    app = make_app()
    svc = app.extensions["computed"]
    bob, root = svc.accounts.create("bob"), svc.accounts.create("root", admin=True)
    return app, app.test_client(), app.config["TEST_AUTH"][0], signed_in(app, bob), bob, signed_in(app, root)


def test_a_second_key_is_made_and_shown_once_and_a_third_refused(accounts, expect_error):
    app, client, first, _, _, _ = accounts
    listed = keys(client)
    assert list(listed) == [first]
    assert set(listed[first]) == KEY_FIELDS
    assert listed[first]["status"] == "Active" and listed[first]["current"] is True

    second = make_key(client)
    assert set(second) == KEY_FIELDS | {"secret_access_key", "admin"}
    assert second["status"] == "Active" and second["current"] is False and second["last_used_at"] is None
    assert second["account_id"] == app.config["TEST_CALLER"].account_id
    # the new key works at once; it is the current one of its own requests
    with_second = signed_in(app, Creds(second["access_key_id"], second["secret_access_key"]))
    assert keys(with_second)[second["access_key_id"]]["current"] is True
    # never a secret again
    for response in (client.get(PATH), client.get(f"{PATH}/{second['access_key_id']}")):
        assert second["secret_access_key"] not in response.get_data(as_text=True)
        assert "secret" not in response.get_data(as_text=True)

    message = expect_error(client.post(PATH), 409, "LimitExceeded")
    assert "2 access keys" in message
    assert len(keys(client)) == 2


def test_an_inactive_key_fails_at_once_then_works_again(accounts, expect_error):
    app, client, first, _, _, _ = accounts
    second = make_key(client)
    new = signed_in(app, Creds(second["access_key_id"], second["secret_access_key"]))
    region = app.extensions["computed"].settings.region

    response = patch(new, first, "Inactive")
    assert response.status_code == 200 and response.get_json()["status"] == "Inactive"
    assert expect_error(client.get("/v1/instances"), 401, "AuthFailure") == FAILED  # Basic
    _, secret = app.config["TEST_AUTH"]
    signed = send_signed(app.test_client(), "GET", "/v1/instances", first, secret, region)
    assert expect_error(signed, 401, "AuthFailure") == FAILED  # SigV4
    presigned = send_signed(app.test_client(), "GET", "/v1/instances", first, secret, region, expires=300)
    assert expect_error(presigned, 401, "AuthFailure") == FAILED  # a presigned URL made before, or after
    assert keys(new)[first]["status"] == "Inactive"

    assert patch(new, first, "Active").status_code == 200
    assert client.get("/v1/instances").status_code == 200
    assert send_signed(app.test_client(), "GET", "/v1/instances", first, secret, region).status_code == 200

    assert new.delete(f"{PATH}/{first}").status_code == 204
    expect_error(client.get("/v1/instances"), 401, "AuthFailure")
    assert list(keys(new)) == [second["access_key_id"]]
    expect_error(new.get(f"{PATH}/{first}"), 404, "InvalidAccessKeyId.NotFound")


def test_the_last_active_key_goes_only_with_force(accounts, expect_error):
    app, client, first, _, _, _ = accounts
    for response in (patch(client, first, "Inactive"), client.delete(f"{PATH}/{first}")):
        assert "last active access key" in expect_error(response, 409, "LastActiveAccessKey")
    assert client.get("/v1/instances").status_code == 200

    second = make_key(client)
    assert patch(client, second["access_key_id"], "Inactive").status_code == 200
    # an inactive second key is no way in: the first is still the last active one
    expect_error(client.delete(f"{PATH}/{first}"), 409, "LastActiveAccessKey")
    # deleting an inactive key needs no force
    assert client.delete(f"{PATH}/{second['access_key_id']}").status_code == 204

    # with force, the key this request is signed with: answered, then it is gone
    assert patch(client, first, "Inactive", force="true").status_code == 200
    expect_error(client.get("/v1/instances"), 401, "AuthFailure")


def test_deleting_the_key_a_request_is_signed_with_answers_that_request(accounts, expect_error):
    app, client, first, _, _, _ = accounts
    make_key(client)
    assert client.delete(f"{PATH}/{first}").status_code == 204
    expect_error(client.get(PATH), 401, "AuthFailure")


def test_another_accounts_key_is_not_found(accounts, expect_error):
    app, client, first, bob_client, bob, admin = accounts
    bob_key = bob.access_key_id
    unknown = expect_error(client.get(f"{PATH}/{UNKNOWN_KEY_ID}"), 404, "InvalidAccessKeyId.NotFound")
    for response in (client.get(f"{PATH}/{bob_key}"), patch(client, bob_key, "Inactive"),
                     client.delete(f"{PATH}/{bob_key}", query_string={"force": "true"})):
        message = expect_error(response, 404, "InvalidAccessKeyId.NotFound")
        assert message == unknown.replace(UNKNOWN_KEY_ID, bob_key)
    assert bob_client.get("/v1/instances").status_code == 200  # untouched
    for bad in ("nope", "akcd" + "q" * 16, "AKCD" + "Q" * 17, "AKCD" + "1" * 16, "%00"):
        expect_error(client.get(f"{PATH}/{bad}"), 404, "InvalidAccessKeyId.NotFound")
        expect_error(client.delete(f"{PATH}/{bad}"), 404, "InvalidAccessKeyId.NotFound")
    # naming another account: admins only
    expect_error(client.get(PATH, query_string={"account": bob.account_id}), 403, "UnauthorizedOperation")
    expect_error(client.post(PATH, query_string={"account": bob.account_id}), 403, "UnauthorizedOperation")
    assert len(keys(bob_client)) == 1
    # bad requests
    expect_error(client.get(PATH, query_string={"account": "12"}), 400)
    expect_error(client.patch(f"{PATH}/{first}", json={"status": "Gone"}), 400)
    expect_error(client.patch(f"{PATH}/{first}", json={}), 400)
    expect_error(client.patch(f"{PATH}/{first}", json={"status": "Inactive", "x": 1}), 400)
    expect_error(client.delete(f"{PATH}/{first}", query_string={"force": "maybe"}), 400)
    expect_error(admin.get(PATH, query_string={"account": "999999999999"}), 404, "InvalidAccountID.NotFound")


def test_an_admin_manages_another_accounts_keys(accounts, expect_error):
    app, client, first, bob_client, bob, admin = accounts
    made = make_key(admin, account=bob.account_id)
    assert made["account_id"] == bob.account_id and made["account_name"] == "bob"
    assert set(keys(admin, account=bob.account_id)) == {bob.access_key_id, made["access_key_id"]}
    expect_error(admin.post(PATH, query_string={"account": bob.account_id}), 409, "LimitExceeded")
    assert patch(admin, bob.access_key_id, "Inactive").status_code == 200
    expect_error(bob_client.get("/v1/instances"), 401, "AuthFailure")
    # locking an account out entirely takes force
    expect_error(admin.delete(f"{PATH}/{made['access_key_id']}"), 409, "LastActiveAccessKey")
    assert admin.delete(f"{PATH}/{made['access_key_id']}", query_string={"force": "1"}).status_code == 204
    assert admin.delete(f"{PATH}/{bob.access_key_id}").status_code == 204
    assert keys(admin, account=bob.account_id) == {}
    # and gives it a way in again
    again = make_key(admin, account=bob.account_id)
    assert signed_in(app, Creds(again["access_key_id"], again["secret_access_key"])).get(PATH).status_code == 200


def test_console_logins_end_when_their_key_is_deactivated_or_deleted(accounts, expect_error):
    app, client, first, _, _, _ = accounts
    secret = app.config["TEST_AUTH"][1]
    browser = bare(app)
    token = token_of(login(browser, first, secret))
    assert browser.get("/v1/instances", auth=None, headers=with_cookie(token)).status_code == 200
    second = make_key(client)
    other = signed_in(app, Creds(second["access_key_id"], second["secret_access_key"]))

    assert patch(other, first, "Inactive").status_code == 200
    expect_error(browser.get("/v1/instances", auth=None, headers=with_cookie(token)), 401, "AuthFailure")
    expect_error(login(browser, first, secret), 401, "AuthFailure")  # no new login with it either
    assert patch(other, first, "Active").status_code == 200
    # ended for good: reactivating the key does not bring its logins back
    expect_error(browser.get("/v1/instances", auth=None, headers=with_cookie(token)), 401, "AuthFailure")

    token = token_of(login(browser, first, secret))
    assert browser.get("/v1/instances", auth=None, headers=with_cookie(token)).status_code == 200
    # the console's own key, deleted from the console: answered, then the login is over
    gone = browser.delete(f"{PATH}/{first}", auth=None, headers=with_cookie(token, **HEADER))
    assert gone.status_code == 204, gone.get_data(as_text=True)
    expect_error(browser.get("/console/session", auth=None, headers=with_cookie(token)), 401, "AuthFailure")


def test_ec2_refuses_an_inactive_key_with_auth_failure(accounts):
    """boto3 over HTTP on a loopback port: DescribeInstances with the key, deactivated, is
    refused with EC2's AuthFailure; reactivated, it works."""
    app, client, first, _, _, _ = accounts
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        svc = app.extensions["computed"]
        ec2 = boto3.client("ec2", endpoint_url=f"http://127.0.0.1:{server.server_port}/",
                           region_name=svc.settings.region, config=Config(retries={"total_max_attempts": 1}),
                           aws_access_key_id=first, aws_secret_access_key=app.config["TEST_AUTH"][1])
        assert ec2.describe_instances()["Reservations"] == []
        second = make_key(client)
        assert patch(client, first, "Inactive").status_code == 200
        with pytest.raises(ClientError) as refused:
            ec2.describe_instances()
        assert refused.value.response["Error"]["Code"] == "AuthFailure"
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 401
        other = signed_in(app, Creds(second["access_key_id"], second["secret_access_key"]))
        assert patch(other, first, "Active").status_code == 200
        assert ec2.describe_instances()["Reservations"] == []
        assert keys(client)[first]["last_used_service"] == "ec2"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_last_use_is_recorded_at_most_once_a_minute(make_app):
    clock = FakeClock(T0)
    app = make_app(clock=clock)
    svc = app.extensions["computed"]
    client = app.test_client()
    first = app.config["TEST_AUTH"][0]
    writes = []

    @event.listens_for(svc.db.engine, "before_cursor_execute")
    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE ACCESS_KEYS"):
            writes.append(statement)

    assert keys(client)[first]["last_used_at"] is not None  # this very request
    assert len(writes) == 1
    for _ in range(20):
        clock.advance(seconds=2)
        assert client.get("/v1/sizes").status_code == 200
    assert len(writes) == 1, "a write per request"
    shown = keys(client)[first]
    assert dt.datetime.fromisoformat(shown["last_used_at"]) == T0 and shown["last_used_service"] == "rest"
    clock.advance(seconds=30)  # a minute since the recorded use
    keys(client)
    assert len(writes) == 2
    shown = keys(client)[first]
    assert dt.datetime.fromisoformat(shown["last_used_at"]) == T0 + dt.timedelta(seconds=70)

    # the console's login and its cookie count as the console's
    clock.advance(minutes=5)
    browser = bare(app)
    token = token_of(login(browser, *app.config["TEST_AUTH"]))
    assert keys(client)[first]["last_used_service"] == "console"
    clock.advance(minutes=5)
    assert browser.get(PATH, auth=None, headers=with_cookie(token)).get_json()["access_keys"][0][
        "last_used_service"] == "console"


def test_a_burst_that_read_a_stale_last_use_tries_one_write(make_app):
    """Requests in flight together all read the same stale time: this process tries the
    write once a minute per key, not once each; another process (another AccessKeys on the
    same store) finds the row written and writes nothing."""
    from computed.accounts.access_keys import AccessKeys

    clock = FakeClock(T0)
    app = make_app(clock=clock)
    svc = app.extensions["computed"]
    first = app.config["TEST_AUTH"][0]
    statements = []

    @event.listens_for(svc.db.engine, "before_cursor_execute")
    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE ACCESS_KEYS"):
            statements.append(statement)

    assert svc.access_keys.record_use(first, "rest", None) is True
    assert [svc.access_keys.record_use(first, "rest", None) for _ in range(10)] == [False] * 10
    assert len(statements) == 1
    other_process = AccessKeys(svc.db, svc.accounts.box, clock)
    assert other_process.record_use(first, "ec2", None) is False  # tried: the row is fresh
    assert len(statements) == 2
    clock.advance(minutes=1)
    assert svc.access_keys.record_use(first, "ec2", T0) is True
    assert keys(app.test_client())[first]["last_used_service"] == "ec2"
