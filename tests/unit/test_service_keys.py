"""Rotating the service's own keys online (computed/accounts/key_rotation.py, ``computed
secrets rotate-sealing-key|rotate-console-key``), on the store of a running app:

- the sealing key: the file holds [new, old] then [new]; every sealed access key secret is
  sealed again with the new key; a second SecretBox that read the file before (as another
  service process would) opens every stored secret at every step, and seals with the newest
  key; the old file no longer opens anything; Basic and SigV4 requests with an existing key
  work after the rotation; a store with a secret no key opens is refused, unchanged;
- the console key: every console login ends (401), a new login works, and a second
  ``Sessions`` that holds the old key reads the new key's cookies and signs with it.
"""

from __future__ import annotations

import os
import stat

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet
from sqlalchemy import select

from api.console_session import Sessions
from computed.accounts import key_rotation
from computed.accounts.key_rotation import CONSOLE_KEY_FILE
from computed.accounts.registry import KEY_FILE
from computed.accounts.secret_box import SecretBox
from computed.cli import cli
from computed.store.models import AccessKey
from tests.unit.api.test_api_auth import send_signed
from tests.unit.api.test_console import login, token_of, with_cookie


def rotate(settings, which: str):
    env = {k: None for k in os.environ if k.startswith("COMPUTED_")}
    env |= {"COMPUTED_VAR_DIR": str(settings.var_dir), "COMPUTED_DATABASE_URL": settings.database_url}
    return CliRunner(env=env).invoke(cli, ["secrets", which], catch_exceptions=False)


def stored(service) -> dict[str, bytes]:
    with service.db.reading() as s:
        return dict(s.execute(select(AccessKey.id, AccessKey.sealed_secret)).all())


def lines(path) -> list[bytes]:
    return path.read_bytes().splitlines()


@pytest.fixture
def two_keys(app, service):
    """Two access keys in the store (the test account's and a second account's), the
    secrets of each by id."""
    second = service.accounts.create("bob")
    key_id, secret = app.config["TEST_AUTH"]
    return {key_id: secret, second.access_key_id: second.secret_access_key}


def test_a_stale_box_opens_every_secret_at_every_step(settings, service, two_keys, monkeypatch):
    key_file = settings.var_dir / KEY_FILE
    old = lines(key_file)
    assert len(old) == 1
    write_keys = key_rotation.write_keys
    steps, sealed_meanwhile = [], []

    def watched(path, keys):
        # a box that read the file before this write, as another process that has not seen it yet
        stale = SecretBox(path)
        assert {k: stale.open(v) for k, v in stored(service).items()} == two_keys
        write_keys(path, keys)
        steps.append(list(keys))
        assert {k: stale.open(v) for k, v in stored(service).items()} == two_keys
        # a box that read the file before the rotation began seals with the newest key there
        # is now (callers seal inside a writing transaction, which the re-sealing one cannot
        # overlap: what is sealed after step 1 is sealed with the new key)
        sealed_meanwhile.append(before.seal("sealed meanwhile"))

    monkeypatch.setattr(key_rotation, "write_keys", watched)
    before = SecretBox(key_file)  # holds [old] from here on, whatever the file becomes
    assert {k: before.open(v) for k, v in stored(service).items()} == two_keys
    sealed_before = stored(service)

    result = rotate(settings, "rotate-sealing-key")
    assert result.exit_code == 0, result.output
    assert "2 access key secret(s) sealed again" in result.output
    new = steps[1][0]
    assert steps == [[new, *old], [new]] and new not in old
    assert lines(key_file) == [new]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    after = stored(service)
    assert all(after[k] != sealed_before[k] for k in two_keys)
    only_new = Fernet(new)
    assert {k: only_new.decrypt(v).decode() for k, v in after.items()} == two_keys
    assert {k: before.open(v) for k, v in after.items()} == two_keys  # the first box, never told
    assert [only_new.decrypt(v) for v in sealed_meanwhile] == [b"sealed meanwhile"] * 2
    assert {k: service.accounts.box.open(v) for k, v in after.items()} == two_keys


def test_the_old_key_file_opens_nothing_after_rotation(settings, service, two_keys, tmp_path):
    key_file = settings.var_dir / KEY_FILE
    copy = tmp_path / "old.key"
    copy.write_bytes(key_file.read_bytes())
    old_box = SecretBox(copy)
    assert {k: old_box.open(v) for k, v in stored(service).items()} == two_keys
    assert rotate(settings, "rotate-sealing-key").exit_code == 0
    assert {k: old_box.open(v) for k, v in stored(service).items()} == {k: None for k in two_keys}


def test_requests_with_an_existing_key_work_after_rotation(app, settings, service, expect_error):
    client = app.test_client()
    key_id, secret = app.config["TEST_AUTH"]
    region = settings.region

    def answers() -> dict[str, int]:
        return {"basic": client.get("/v1/instances", auth=(key_id, secret)).status_code,
                "sigv4": send_signed(client, "GET", "/v1/instances", key_id, secret, region).status_code,
                "ec2 sigv4": send_signed(client, "GET", "/?Action=DescribeInstances&Version=2016-11-15", key_id,
                                         secret, region, service="ec2").status_code}

    ok = {"basic": 200, "sigv4": 200, "ec2 sigv4": 200}
    assert answers() == ok  # the service's box has read the key file
    assert rotate(settings, "rotate-sealing-key").exit_code == 0
    assert answers() == ok
    assert rotate(settings, "rotate-sealing-key").exit_code == 0  # and again
    assert answers() == ok
    made = client.post("/v1/account/access-keys", auth=(key_id, secret))
    assert made.status_code == 201, made.get_data(as_text=True)
    new_id, new_secret = made.get_json()["access_key_id"], made.get_json()["secret_access_key"]
    assert rotate(settings, "rotate-sealing-key").exit_code == 0
    assert client.get("/v1/instances", auth=(new_id, new_secret)).status_code == 200
    expect_error(client.get("/v1/instances", auth=(key_id, "wrong" + secret)), 401, "AuthFailure")


def test_a_secret_no_key_opens_refuses_the_rotation_unchanged(settings, service, two_keys):
    key_file = settings.var_dir / KEY_FILE
    with service.db.session() as s:
        key = s.get(AccessKey, next(iter(two_keys)))
        key.sealed_secret = Fernet(Fernet.generate_key()).encrypt(b"restored without its key")
    before_file, before_rows = key_file.read_bytes(), stored(service)
    result = CliRunner(env={"COMPUTED_VAR_DIR": str(settings.var_dir),
                            "COMPUTED_DATABASE_URL": settings.database_url}).invoke(
        cli, ["secrets", "rotate-sealing-key"])
    assert result.exit_code == 1
    assert "open with no key" in result.output and "Nothing was changed" in result.output
    assert key_file.read_bytes() == before_file and stored(service) == before_rows


def test_a_key_file_left_half_way_opens_everything_and_a_second_run_finishes(settings, service, two_keys):
    """A rotation stopped after step 1 leaves [new, old]: both open, and rotating again
    ends with one key that opens every secret."""
    key_file = settings.var_dir / KEY_FILE
    old = lines(key_file)
    key_rotation.write_keys(key_file, [Fernet.generate_key(), *old])  # step 1 only
    box = SecretBox(key_file)
    assert {k: box.open(v) for k, v in stored(service).items()} == two_keys
    assert rotate(settings, "rotate-sealing-key").exit_code == 0
    assert len(lines(key_file)) == 1
    assert {k: SecretBox(key_file).open(v) for k, v in stored(service).items()} == two_keys


def test_rotating_the_console_key_ends_every_login(app, settings, service, expect_error):
    client = app.test_client(use_cookies=False)
    key_file = settings.var_dir / CONSOLE_KEY_FILE
    first = login(client, *app.config["TEST_AUTH"])
    assert first.status_code == 200
    token = token_of(first)
    assert client.get("/v1/instances", headers=with_cookie(token), auth=None).status_code == 200
    old = key_file.read_bytes()

    result = rotate(settings, "rotate-console-key")
    assert result.exit_code == 0, result.output
    assert "1 console login(s) ended" in result.output
    assert key_file.read_bytes() != old and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    expect_error(client.get("/v1/instances", headers=with_cookie(token), auth=None), 401, "AuthFailure")

    again = login(client, *app.config["TEST_AUTH"])
    assert again.status_code == 200
    fresh = token_of(again)
    assert client.get("/v1/instances", headers=with_cookie(fresh), auth=None).status_code == 200
    assert Sessions(key_file).read(fresh, service.clock.now()) is not None  # signed with the new key


def test_a_stale_sessions_reads_and_signs_with_the_rotated_key(app, settings, service):
    key_file = settings.var_dir / CONSOLE_KEY_FILE
    here, there = Sessions(key_file), Sessions(key_file)
    before = service.console_sessions.open(app.config["TEST_AUTH"][0], dt_hours(1))
    old_token, _ = there.issue(before)  # both read the key as it is
    assert here.read(old_token, service.clock.now()) is not None
    assert rotate(settings, "rotate-console-key").exit_code == 0
    login_ = service.console_sessions.open(app.config["TEST_AUTH"][0], dt_hours(1))
    token, _ = here.issue(login_)
    assert there.read(token, service.clock.now()) is not None  # THERE still held the old key
    token2, _ = there.issue(login_)
    assert Sessions(key_file).read(token2, service.clock.now()) is not None
    assert Sessions(key_file).read(old_token, service.clock.now()) is None
    assert not service.console_sessions.is_open(before.id, before.access_key_id)


def dt_hours(n: int):
    import datetime as dt
    return dt.timedelta(hours=n)


def test_rotations_leave_only_0600_files_in_the_secrets_directory(app, settings, service):
    assert rotate(settings, "rotate-sealing-key").exit_code == 0
    assert rotate(settings, "rotate-console-key").exit_code == 0
    files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (settings.var_dir / "secrets").iterdir()}
    assert {"access-keys.key", "console-session.key"} <= set(files)
    assert not [n for n in files if n.endswith(".new")]  # no temporary file left behind
    assert set(files.values()) == {0o600}, files


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file away")
@pytest.mark.parametrize("which, name", [("rotate-sealing-key", KEY_FILE), ("rotate-console-key", CONSOLE_KEY_FILE)])
def test_a_rotation_by_root_keeps_the_key_files_owner(app, settings, service, which, name):
    """The service may run as another user than the operator who rotates (root): the new
    file is still the service's to read."""
    key_file = settings.var_dir / name
    if not key_file.exists():
        assert rotate(settings, which).exit_code == 0
    os.chown(key_file, 4242, 4343)
    assert rotate(settings, which).exit_code == 0
    st = key_file.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (4242, 4343, 0o600)


@pytest.mark.parametrize("content", [b"", b"not a key\n"])
def test_a_damaged_key_file_refuses_the_rotation_unchanged(settings, service, two_keys, content):
    key_file = settings.var_dir / KEY_FILE
    key_file.write_bytes(content)
    before_rows = stored(service)
    result = CliRunner(env={"COMPUTED_VAR_DIR": str(settings.var_dir),
                            "COMPUTED_DATABASE_URL": settings.database_url}).invoke(
        cli, ["secrets", "rotate-sealing-key"])
    assert result.exit_code == 1 and result.exception.__class__ is SystemExit, result.output
    assert "is not a key file of this service" in result.output
    assert key_file.read_bytes() == content and stored(service) == before_rows
