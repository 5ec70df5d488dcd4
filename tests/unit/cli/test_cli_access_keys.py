"""``computed account access-key create|ls|deactivate|activate|rm|rotate`` end to end against
a real server (waitress on a loopback port, libvirt's test driver): the first admin rotates
the key of ``var/admin-credentials.json`` (the file is rewritten, 0600, and the old key
fails), an account rotates the key of its profile, and the refusals (a third key, the last
active key without --force, another account's key) come back as ``code: message``."""

from __future__ import annotations

import configparser
import json
import stat

import pytest
import requests
from click.testing import CliRunner

from api.app import create_app
from computed.accounts.registry import ADMIN_CREDENTIALS_FILE
from computed.cli import cli
from computed.settings import Settings
from tests.http_server import ThreadedServer
from tests.unit.cli.test_cli_accounts import clean_env, write_profiles
from tests.unit.conftest import find_free_ports

PATH = "/v1/account/access-keys"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base URL, state directory, service): the API under waitress, its first admin
    bootstrapped (var/admin-credentials.json)."""
    var = tmp_path_factory.mktemp("server-var")
    settings = Settings.load(environ={}, var_dir=var, libvirt_uri="test:///default", ssh_ports=find_free_ports(20))
    app = create_app(settings)
    service = app.extensions["computed"]
    service.accounts.bootstrap(var / ADMIN_CREDENTIALS_FILE)
    httpd = ThreadedServer(app)
    try:
        yield httpd.url, var, service
    finally:
        httpd.close()
        service.close()


@pytest.fixture
def run(server, tmp_path):
    """run(*args, **env) -> click Result of ``computed ARGS`` against the server, in a clean
    environment (no credentials but those ENV gives; the server's state directory if
    COMPUTED_VAR_DIR is given)."""
    url, _, _ = server

    def invoke(*args: str, **env: str | None):
        return CliRunner(env=clean_env(tmp_path, COMPUTED_API_URL=url, **env)).invoke(cli, list(args),
                                                                                       catch_exceptions=False)

    return invoke


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def signs_in(url: str, key: str, secret: str) -> int:
    return requests.get(url + PATH, auth=(key, secret), timeout=30).status_code


def test_the_first_admin_rotates_the_admin_file(server, run):
    url, var, _ = server
    admin_file = var / ADMIN_CREDENTIALS_FILE
    old = json.loads(admin_file.read_text())
    as_admin = {"COMPUTED_VAR_DIR": str(var)}  # nothing else: the CLI signs in with the admin file

    listed = json.loads(ok(run("account", "access-key", "ls", "--json", **as_admin)))
    assert [(k["access_key_id"], k["current"]) for k in listed] == [(old["access_key_id"], True)]

    # by hand: a second key into the file, then the old one deactivated and deleted
    assert "saved in" in run("account", "access-key", "create", "--admin-file", **as_admin).stderr
    new = json.loads(admin_file.read_text())
    assert stat.S_IMODE(admin_file.stat().st_mode) == 0o600
    assert set(new) == set(old) and new["account_id"] == old["account_id"] and new["admin"] is True
    assert new["access_key_id"] != old["access_key_id"] and new["secret_access_key"] != old["secret_access_key"]
    third = run("account", "access-key", "create", **as_admin)
    assert third.exit_code == 1 and "LimitExceeded" in third.stderr
    table = ok(run("account", "access-key", "ls", **as_admin))
    assert old["access_key_id"] in table and new["access_key_id"] in table and "*" in table
    ok(run("account", "access-key", "deactivate", old["access_key_id"], **as_admin))
    assert signs_in(url, old["access_key_id"], old["secret_access_key"]) == 401
    assert signs_in(url, new["access_key_id"], new["secret_access_key"]) == 200
    ok(run("account", "access-key", "activate", old["access_key_id"], **as_admin))
    assert signs_in(url, old["access_key_id"], old["secret_access_key"]) == 200
    ok(run("account", "access-key", "rm", old["access_key_id"], **as_admin))
    assert signs_in(url, old["access_key_id"], old["secret_access_key"]) == 401

    # in one step
    rotated = run("account", "access-key", "rotate", "--delete", **as_admin)
    assert rotated.exit_code == 0, rotated.output
    newest = json.loads(admin_file.read_text())
    assert newest["access_key_id"] not in (new["access_key_id"], old["access_key_id"])
    assert newest["secret_access_key"] not in rotated.output
    assert signs_in(url, new["access_key_id"], new["secret_access_key"]) == 401
    assert signs_in(url, newest["access_key_id"], newest["secret_access_key"]) == 200
    listed = json.loads(ok(run("account", "access-key", "ls", "--json", **as_admin)))
    assert [k["access_key_id"] for k in listed] == [newest["access_key_id"]]


def test_an_account_rotates_its_profile_and_is_refused_clearly(server, run, tmp_path):
    url, var, service = server
    alice, bob = service.accounts.create("alice-cli"), service.accounts.create("bob-cli")
    profiles = write_profiles(tmp_path / "profiles.ini", default=(bob.access_key_id, bob.secret_access_key),
                              alice=(alice.access_key_id, alice.secret_access_key))
    env = {"COMPUTED_CREDENTIALS_FILE": str(profiles)}

    # the last active key: only with --force; another account's key: not found
    last = run("account", "access-key", "deactivate", alice.access_key_id, "--profile", "alice", **env)
    assert last.exit_code == 1 and "LastActiveAccessKey" in last.stderr
    theirs = run("account", "access-key", "rm", bob.access_key_id, "--profile", "alice", **env)
    assert theirs.exit_code == 1 and "InvalidAccessKeyId.NotFound" in theirs.stderr
    assert signs_in(url, bob.access_key_id, bob.secret_access_key) == 200
    other = run("account", "access-key", "ls", "--account", bob.account_id, "--profile", "alice", **env)
    assert other.exit_code == 1 and "UnauthorizedOperation" in other.stderr

    rotated = run("account", "access-key", "rotate", "--profile", "alice", **env)
    assert rotated.exit_code == 0, rotated.output
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(profiles)
    new_key, new_secret = parser["alice"]["access_key_id"], parser["alice"]["secret_access_key"]
    assert new_key != alice.access_key_id
    assert parser["default"]["access_key_id"] == bob.access_key_id  # the other profiles kept
    assert stat.S_IMODE(profiles.stat().st_mode) == 0o600
    assert signs_in(url, alice.access_key_id, alice.secret_access_key) == 401  # deactivated
    assert signs_in(url, new_key, new_secret) == 200
    listed = {k["access_key_id"]: k["status"] for k in
              json.loads(ok(run("account", "access-key", "ls", "--json", "--profile", "alice", **env)))}
    assert listed == {alice.access_key_id: "Inactive", new_key: "Active"}

    # a key made and printed once; a key from the environment is not rotated here
    made = run("account", "access-key", "create", **env)
    printed = json.loads(ok(made))
    assert printed["account_id"] == bob.account_id and signs_in(url, printed["access_key_id"],
                                                                 printed["secret_access_key"]) == 200
    from_env = run("account", "access-key", "rotate", COMPUTED_ACCESS_KEY_ID=printed["access_key_id"],
                   COMPUTED_SECRET_ACCESS_KEY=printed["secret_access_key"])
    assert from_env.exit_code == 1 and "environment" in from_env.stderr
    # not an admin: the admin file is not written, and the key made is deleted again
    carol = service.accounts.create("carol-cli")
    refused = run("account", "access-key", "create", "--admin-file", COMPUTED_VAR_DIR=str(var),
                  COMPUTED_ACCESS_KEY_ID=carol.access_key_id, COMPUTED_SECRET_ACCESS_KEY=carol.secret_access_key)
    assert refused.exit_code == 1 and "not an admin's key" in refused.stderr
    assert json.loads((var / ADMIN_CREDENTIALS_FILE).read_text())["name"] == "admin"
    assert [k.access_key_id for k in service.access_keys.list(carol.caller)] == [carol.access_key_id]
    # listing accounts locally marks the inactive key
    listed = ok(run("account", "ls", COMPUTED_VAR_DIR=str(var)))
    assert f"{alice.access_key_id} (inactive)" in listed
