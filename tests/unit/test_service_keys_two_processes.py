"""The service's own keys rotated while two real ``computed serve`` processes
(tests/serve_process.py) on one PostgreSQL store and one state directory go on serving,
neither restarted: each first authenticates an access key and a console login (so that it
holds the old keys), then ``computed secrets rotate-sealing-key`` runs beside them; both
accept the key over Basic and SigV4 (REST and EC2), and a key made after the rotation by
one is accepted by the other. Then ``rotate-console-key``: the console login ends in both,
and a login made through one is accepted by the other."""

from __future__ import annotations

import os

import pytest
import requests
from click.testing import CliRunner

from tests.serve_process import ServeProcess, shared_store_settings
from tests.unit.test_access_keys_two_processes import sigv4_get

pytestmark = [pytest.mark.postgresql]


@pytest.mark.timeout(300)
def test_keys_rotated_beside_two_serving_processes(new_postgres_database, tmp_path):
    from computed.accounts.registry import KEY_FILE, Accounts
    from computed.accounts.secret_box import SecretBox
    from computed.cli import cli
    from computed.store.engine import Database

    url = new_postgres_database()
    var = tmp_path / "var"
    settings = shared_store_settings(url, var)
    env = {k: None for k in os.environ if k.startswith("COMPUTED_")} | settings
    db = Database(url)
    procs = []
    try:
        procs.append(ServeProcess("process-A", settings, tmp_path / "a.log"))
        procs.append(ServeProcess("process-B", settings, tmp_path / "b.log"))
        a, b = (p.url for p in procs)
        alice = Accounts(db, SecretBox(var / KEY_FILE)).create("alice")
        key, secret = alice.access_key_id, alice.secret_access_key

        def accepted(base: str, key: str = key, secret: str = secret) -> dict[str, int]:
            return {"basic": requests.get(base + "/v1/instances", auth=(key, secret), timeout=30).status_code,
                    "rest sigv4": sigv4_get(base + "/v1/instances", key, secret, "computed"),
                    "ec2 sigv4": sigv4_get(base + "/?Action=DescribeInstances&Version=2016-11-15", key, secret,
                                           "ec2")}

        def console(base: str, cookie: dict) -> int:
            return requests.get(base + "/v1/instances", cookies=cookie, timeout=30).status_code

        def log_in(base: str) -> dict:
            made = requests.post(base + "/console/session", json={"access_key_id": key, "secret_access_key": secret},
                                 headers={"X-Computed-Console": "1"}, timeout=30)
            assert made.status_code == 200, made.text
            return {"computed_console": made.cookies["computed_console"]}

        ok = {"basic": 200, "rest sigv4": 200, "ec2 sigv4": 200}
        cookie = log_in(a)
        assert accepted(a) == ok and accepted(b) == ok  # both hold the old sealing key now
        assert console(a, cookie) == 200 and console(b, cookie) == 200

        rotated = CliRunner(env=env).invoke(cli, ["secrets", "rotate-sealing-key"], catch_exceptions=False)
        assert rotated.exit_code == 0, rotated.output
        assert len((var / KEY_FILE).read_bytes().splitlines()) == 1
        assert accepted(a) == ok and accepted(b) == ok
        made = requests.post(b + "/v1/account/access-keys", auth=(key, secret), timeout=30)
        assert made.status_code == 201, made.text
        second = made.json()["access_key_id"], made.json()["secret_access_key"]
        assert accepted(a, *second) == ok

        rotated = CliRunner(env=env).invoke(cli, ["secrets", "rotate-console-key"], catch_exceptions=False)
        assert rotated.exit_code == 0, rotated.output
        assert console(a, cookie) == 401 and console(b, cookie) == 401  # every login ended
        fresh = log_in(b)  # B signs with the new key; A, which holds the old one, reads it
        assert console(a, fresh) == 200 and console(b, fresh) == 200
        fresh = log_in(a)
        assert console(b, fresh) == 200 and console(a, fresh) == 200
    finally:
        for p in procs:
            p.stop()
        db.dispose()
