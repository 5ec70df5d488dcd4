"""Issue 17, finding 9: what one account may pile up is capped by settings. Key pairs
(account_max_key_pairs): KeyPairLimitExceeded (400), exact under concurrency, nothing half
made. Console logins (account_max_console_logins): a login past the cap ends the account's
oldest, as a web app's "too many devices" does. (Forwarded ports: tests/unit/compute/
test_port_limits.py.)"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from computed.clock import FakeClock
from computed.errors import ComputedError
from computed.store.models import ConsoleSession, KeyPair
from tests.at_once import at_once
from tests.unit.api.test_console import bare, login, token_of, with_cookie

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHtvU8vXL6vQ1iJqcLsLNl0yZoS+9Gf4Xv8JtXkq3hWR me@laptop"


def key_pairs(svc) -> int:
    with svc.db.reading() as s:
        return s.scalar(select(func.count()).select_from(KeyPair))


def test_key_pairs_per_account(make_app, expect_error):
    app = make_app(account_max_key_pairs=2)
    client, svc = app.test_client(), app.extensions["computed"]
    assert client.post("/v1/keypairs", json={"name": "one"}).status_code == 201
    assert client.post("/v1/keypairs", json={"name": "two", "public_key": PUBLIC_KEY}).status_code == 201
    for body in ({"name": "three"}, {"name": "three", "public_key": PUBLIC_KEY}):
        message = expect_error(client.post("/v1/keypairs", json=body), 400, "KeyPairLimitExceeded")
        assert "limit is 2 key pairs" in message
    assert [k["name"] for k in client.get("/v1/keypairs").get_json()["key_pairs"]] == ["one", "two"]
    # a duplicate is still a duplicate, not a limit
    expect_error(client.post("/v1/keypairs", json={"name": "one"}), 409, "InvalidKeyPair.Duplicate")
    other = svc.accounts.create("other")
    assert client.post("/v1/keypairs", json={"name": "one"},
                       auth=(other.access_key_id, other.secret_access_key)).status_code == 201
    assert client.delete("/v1/keypairs/one").status_code == 204
    assert client.post("/v1/keypairs", json={"name": "three"}).status_code == 201
    assert key_pairs(svc) == 3


def test_key_pairs_at_once_stop_at_the_limit(make_app):
    app = make_app(account_max_key_pairs=3)
    svc, caller = app.extensions["computed"], app.config["TEST_CALLER"]

    def create(i):
        try:
            svc.keypairs.create(caller, f"key-{i}")
            return ""
        except ComputedError as e:
            return e.code

    results = at_once(create, 12)
    assert results.count("") == 3 and results.count("KeyPairLimitExceeded") == 9, results
    assert key_pairs(svc) == 3


def test_console_logins_past_the_cap_end_the_oldest(make_app, expect_error):
    clock = FakeClock(T0)
    app = make_app(clock=clock, account_max_console_logins=2)
    svc = app.extensions["computed"]
    auth = app.config["TEST_AUTH"]
    other = svc.accounts.create("other")
    theirs = token_of(login(bare(app), other.access_key_id, other.secret_access_key))

    def works(token) -> bool:
        return bare(app).get("/v1/instances", auth=None, headers=with_cookie(token)).status_code == 200

    tokens = []
    for _ in range(4):
        clock.advance(seconds=1)
        response = login(bare(app), *auth)
        assert response.status_code == 200, response.get_data(as_text=True)
        tokens.append(token_of(response))
    assert [works(t) for t in tokens] == [False, False, True, True]
    expect_error(bare(app).get("/v1/instances", auth=None, headers=with_cookie(tokens[0])), 401, "AuthFailure")
    assert works(theirs)  # another account's logins are its own
    with svc.db.reading() as s:
        assert s.scalar(select(func.count()).select_from(ConsoleSession)) == 3
