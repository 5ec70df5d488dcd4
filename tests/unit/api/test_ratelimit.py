"""The limit on failed authentications (api.ratelimit), on the service's injected clock:

- after N failures (a wrong Basic secret, a bad SigV4 signature, a failed console login) from
  one source, that source gets 429 ``RequestLimitExceeded`` with ``Retry-After``, good
  credentials or not, on the REST API, the EC2 API and the console's login, until the window
  ends; another source with good credentials is answered as before;
- after M failures claiming one access key id, from any sources, that key id gets 429 until
  the window ends; other keys are unaffected;
- an unknown key id is counted and answered exactly as one that exists;
- successes and requests without credentials count nothing;
- the process's request threads share the counts: concurrent failures never pass the limit.
"""

from __future__ import annotations

import datetime as dt
import threading
import xml.etree.ElementTree as ET

import pytest

from api.ratelimit import FailureLimit
from computed.clock import FakeClock
from tests.unit.api.test_api_auth import send_signed, sigv4

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
WRONG = "w" * 40
UNKNOWN_KEY_ID = "AKCD" + "Q" * 16
PER_SOURCE, PER_KEY, WINDOW = 3, 5, 60
DESCRIBE = "/?Action=DescribeInstances&Version=2016-11-15"


@pytest.fixture
def clock():
    return FakeClock(T0)


@pytest.fixture
def limited(make_app, clock):
    return make_app(clock=clock, auth_failures_per_source=PER_SOURCE, auth_failures_per_key=PER_KEY,
                    auth_failure_window=WINDOW)


def at(address: str) -> dict:
    return {"environ_base": {"REMOTE_ADDR": address}}


def limited_answer(response, expect_error, seconds: int) -> None:
    expect_error(response, 429, "RequestLimitExceeded")
    assert response.headers["Retry-After"] == str(seconds)


def test_failures_from_one_source_are_limited(limited, clock, expect_error):
    client = limited.test_client()
    key_id, secret = limited.config["TEST_AUTH"]
    for n in range(PER_SOURCE):
        expect_error(client.get("/v1/instances", auth=(key_id, WRONG), **at("192.0.2.1")), 401, "AuthFailure")
    # the source is over the limit: even its good credentials wait, on every API
    limited_answer(client.get("/v1/instances", **at("192.0.2.1")), expect_error, WINDOW)
    ec2 = client.get(DESCRIBE, **at("192.0.2.1"))
    assert ec2.status_code == 429 and ec2.headers["Retry-After"] == str(WINDOW)
    assert ET.fromstring(ec2.get_data()).find("Errors/Error/Code").text == "RequestLimitExceeded"
    login = client.post("/console/session", json={"access_key_id": key_id, "secret_access_key": secret},
                        headers={"X-Computed-Console": "1"}, auth=None, **at("192.0.2.1"))
    limited_answer(login, expect_error, WINDOW)
    assert "Set-Cookie" not in login.headers
    # another source, the same key: answered (the key has 3 failures of 5)
    assert client.get("/v1/instances", **at("192.0.2.2")).status_code == 200
    clock.advance(seconds=WINDOW - 20)
    limited_answer(client.get("/v1/instances", **at("192.0.2.1")), expect_error, 20)
    clock.advance(seconds=20)
    assert client.get("/v1/instances", **at("192.0.2.1")).status_code == 200


def test_an_ipv6_source_is_its_64(limited, expect_error):
    client = limited.test_client()
    key_id, _ = limited.config["TEST_AUTH"]
    for n in range(PER_SOURCE):
        client.get("/v1/instances", auth=(key_id, WRONG), **at(f"2001:db8:1:2::{n + 1}"))
    limited_answer(client.get("/v1/instances", **at("2001:db8:1:2:ffff::9")), expect_error, WINDOW)
    assert client.get("/v1/instances", **at("2001:db8:1:3::1")).status_code == 200


def test_failures_against_one_key_are_limited_from_any_source(limited, make_app, clock, expect_error):
    client = limited.test_client()
    key_id, secret = limited.config["TEST_AUTH"]
    other = limited.extensions["computed"].accounts.create("other")
    for n in range(PER_KEY):  # each source stays under its own limit
        expect_error(client.get("/v1/instances", auth=(key_id, WRONG), **at(f"198.51.100.{n}")), 401, "AuthFailure")
    limited_answer(client.get("/v1/instances", **at("203.0.113.9")), expect_error, WINDOW)
    signed = send_signed(client, "GET", "/v1/instances", key_id, secret, "computed-1", at=clock.now())
    limited_answer(signed, expect_error, WINDOW)
    # another key from the same fresh source, and from a source that failed for the key
    assert client.get("/v1/instances", auth=(other.access_key_id, other.secret_access_key),
                      **at("203.0.113.9")).status_code == 200
    assert client.get("/v1/instances", auth=(other.access_key_id, other.secret_access_key),
                      **at("198.51.100.0")).status_code == 200
    clock.advance(seconds=WINDOW)
    assert client.get("/v1/instances", **at("203.0.113.9")).status_code == 200


def test_bad_signatures_are_counted(limited, clock, expect_error):
    client = limited.test_client()
    key_id, secret = limited.config["TEST_AUTH"]
    for n in range(PER_SOURCE):
        bad = send_signed(client, "GET", "/v1/instances", key_id, WRONG, "computed-1", at=clock.now())
        expect_error(bad, 401, "AuthFailure")
    good = send_signed(client, "GET", "/v1/instances", key_id, secret, "computed-1", at=clock.now())
    limited_answer(good, expect_error, WINDOW)
    # presigned, on the EC2 API, from another source: the key has 3 failures of 5
    url, headers = sigv4("GET", DESCRIBE, key_id, WRONG, "computed-1", at=clock.now(), service="ec2", expires=300)
    for n in range(PER_KEY - PER_SOURCE):
        assert client.get(url, headers=headers, auth=None, **at(f"192.0.2.{50 + n}")).status_code == 401
    url, headers = sigv4("GET", DESCRIBE, key_id, secret, "computed-1", at=clock.now(), service="ec2", expires=300)
    answer = client.get(url, headers=headers, auth=None, **at("192.0.2.99"))
    assert answer.status_code == 429 and answer.headers["Retry-After"] == str(WINDOW)


def test_failed_console_logins_are_counted(limited, expect_error):
    client = limited.test_client()
    key_id, secret = limited.config["TEST_AUTH"]

    def login(secret_: str):
        return client.post("/console/session", json={"access_key_id": key_id, "secret_access_key": secret_},
                           headers={"X-Computed-Console": "1"}, auth=None, **at("192.0.2.7"))

    for n in range(PER_SOURCE):
        expect_error(login(WRONG), 401, "AuthFailure")
    limited_answer(login(secret), expect_error, WINDOW)


def test_an_unknown_key_id_is_answered_as_one_that_exists(limited, make_app, clock):
    key_id, _ = limited.config["TEST_AUTH"]

    def answers(app, claimed: str, prefix: str) -> list[tuple[int, str, str | None]]:
        client = app.test_client()
        got = []
        for n in range(PER_KEY + 2):
            r = client.get("/v1/instances", auth=(claimed, WRONG), **at(f"{prefix}.{n}"))
            got.append((r.status_code, r.get_data(as_text=True), r.headers.get("Retry-After")))
        return got

    assert answers(limited, key_id, "192.0.2") == answers(limited, UNKNOWN_KEY_ID, "198.51.100")


def test_successes_and_missing_credentials_count_nothing(limited):
    client = limited.test_client()
    for n in range(3 * PER_KEY):
        assert client.get("/v1/instances", **at("192.0.2.1")).status_code == 200
        assert client.get("/v1/instances", auth=None, **at("192.0.2.1")).status_code == 401
    assert client.get("/v1/instances", **at("192.0.2.1")).status_code == 200


def test_concurrent_failures_never_pass_the_limit():
    """Threads that all attempt at once: exactly LIMIT of them are checked (and fail), the
    rest are refused before any check, whatever the interleaving."""
    limit = FailureLimit(per_source=5, per_key=100, window=dt.timedelta(seconds=60))
    start, checked, refused = threading.Barrier(16), [], []

    def attempt():
        start.wait()
        try:
            limit.begin("192.0.2.1", "AKCDEXAMPLE", T0)
        except Exception as e:
            refused.append(e)
            return
        checked.append(1)
        limit.end("192.0.2.1", "AKCDEXAMPLE", True, T0)

    threads = [threading.Thread(target=attempt) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(checked) == 5 and len(refused) == 11
    assert limit.sources.failures("192.0.2.1") == 5 and limit.keys.failures("AKCDEXAMPLE") == 5


def test_the_source_behind_a_trusted_proxy_is_its_forwarded_address(make_app, clock, expect_error):
    settings = dict(clock=clock, auth_failures_per_source=PER_SOURCE, auth_failures_per_key=100,
                    auth_failure_window=WINDOW)
    proxied = make_app(trusted_proxies=1, **settings)
    client = proxied.test_client()
    key_id, _ = proxied.config["TEST_AUTH"]
    for n in range(PER_SOURCE):
        client.get("/v1/instances", auth=(key_id, WRONG), headers={"X-Forwarded-For": "203.0.113.5"}, **at("127.0.0.1"))
    limited_answer(client.get("/v1/instances", headers={"X-Forwarded-For": "203.0.113.5"}, **at("127.0.0.1")),
                   expect_error, WINDOW)
    assert client.get("/v1/instances", headers={"X-Forwarded-For": "203.0.113.6"},
                      **at("127.0.0.1")).status_code == 200
    # without the setting a client's own X-Forwarded-For changes nothing: it is its address that counts
    direct = make_app(**settings).test_client()
    for n in range(PER_SOURCE):
        direct.get("/v1/instances", auth=(key_id, WRONG), headers={"X-Forwarded-For": f"192.0.2.{n}"},
                   **at("198.51.100.20"))
    limited_answer(direct.get("/v1/instances", headers={"X-Forwarded-For": "192.0.2.200"}, **at("198.51.100.20")),
                   expect_error, WINDOW)


def test_refusals_that_check_no_secret_count_nothing(limited, expect_error):
    """Basic on an EC2 action that changes something, and another site's page's changes, are
    refused before any secret is checked: a page firing them cannot lock a user out."""
    client = limited.test_client()
    run = "/?Action=RunInstances&Version=2016-11-15&ImageId=x&InstanceType=t3.micro&MinCount=1&MaxCount=1"
    for n in range(3 * PER_KEY):
        assert client.get(run, **at("192.0.2.1")).status_code == 401
        cross = client.post("/v1/keypairs", json={"name": "x"}, headers={"Sec-Fetch-Site": "cross-site"},
                            **at("192.0.2.1"))
        expect_error(cross, 403, "CrossSiteRequest")
    assert client.get("/v1/instances", **at("192.0.2.1")).status_code == 200
