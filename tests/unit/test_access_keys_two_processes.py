"""An access key deactivated or deleted through one ``computed serve`` process is refused by
another on that other's very next request: no process keeps a key (or its secret) of its
own. Two real processes (tests/serve_process.py) on one PostgreSQL store and one state
directory, as two API processes of one service; each is first made to authenticate the key
(so that a cache, if there were one, would hold it), then the key is deactivated through A,
and B refuses it -- over HTTP Basic, SigV4 (the REST API and the EC2 API) and the console's
cookie -- then reactivated through A and accepted by B, then deleted through B and refused
by A."""

from __future__ import annotations

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from tests.serve_process import ServeProcess, shared_store_settings

pytestmark = [pytest.mark.postgresql]

PATH = "/v1/account/access-keys"
REGION = "computed-1"  # the default region setting


def sigv4_get(url: str, key_id: str, secret: str, service: str) -> int:
    """The status of a GET of URL signed with SigV4 by botocore."""
    request = AWSRequest(method="GET", url=url)
    SigV4Auth(BotoCredentials(key_id, secret), service, REGION).add_auth(request)
    return requests.get(url, headers=dict(request.headers), timeout=30).status_code


@pytest.mark.timeout(300)
def test_a_key_deactivated_in_one_process_is_refused_by_the_other_at_once(new_postgres_database, tmp_path):
    from computed.accounts.registry import KEY_FILE, Accounts
    from computed.accounts.secret_box import SecretBox
    from computed.store.engine import Database

    url = new_postgres_database()
    var = tmp_path / "var"
    settings = shared_store_settings(url, var)
    db = Database(url)
    procs = []
    try:
        procs.append(ServeProcess("process-A", settings, tmp_path / "a.log"))
        procs.append(ServeProcess("process-B", settings, tmp_path / "b.log"))
        a, b = (p.url for p in procs)
        alice = Accounts(db, SecretBox(var / KEY_FILE)).create("alice")
        key, secret = alice.access_key_id, alice.secret_access_key
        spare = requests.post(a + PATH, auth=(key, secret), timeout=30)
        assert spare.status_code == 201, spare.text
        spare = (spare.json()["access_key_id"], spare.json()["secret_access_key"])

        def accepted(base: str) -> dict[str, int]:
            """How BASE answers the key: Basic, SigV4 for the REST API and for the EC2 API,
            and the console login made with it (when it was active) -- by status."""
            return {"basic": requests.get(base + "/v1/instances", auth=(key, secret), timeout=30).status_code,
                    "rest sigv4": sigv4_get(base + "/v1/instances", key, secret, "computed"),
                    "ec2 sigv4": sigv4_get(base + "/?Action=DescribeInstances&Version=2016-11-15", key, secret,
                                           "ec2"),
                    "console": requests.get(base + "/v1/instances", cookies=cookie, timeout=30).status_code}

        login = requests.post(b + "/console/session", json={"access_key_id": key, "secret_access_key": secret},
                              headers={"X-Computed-Console": "1"}, timeout=30)
        assert login.status_code == 200, login.text
        cookie = {"computed_console": login.cookies["computed_console"]}
        ok = {"basic": 200, "rest sigv4": 200, "ec2 sigv4": 200, "console": 200}
        assert accepted(a) == ok and accepted(b) == ok  # both have just authenticated it

        off = requests.patch(f"{a}{PATH}/{key}", json={"status": "Inactive"}, auth=spare, timeout=30)
        assert off.status_code == 200, off.text
        refused = {"basic": 401, "rest sigv4": 401, "ec2 sigv4": 401, "console": 401}
        assert accepted(b) == refused
        assert accepted(a) == refused

        on = requests.patch(f"{a}{PATH}/{key}", json={"status": "Active"}, auth=spare, timeout=30)
        assert on.status_code == 200, on.text
        back = ok | {"console": 401}  # the console login ended for good
        assert accepted(b) == back

        gone = requests.delete(f"{b}{PATH}/{key}", auth=spare, timeout=30)
        assert gone.status_code == 204, gone.text
        assert accepted(a) == refused
        assert requests.get(a + PATH, auth=spare, timeout=30).status_code == 200
    finally:
        for p in procs:
            p.stop()
        db.dispose()
