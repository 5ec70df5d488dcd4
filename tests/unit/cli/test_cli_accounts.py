"""Accounts from the command line, and the credentials the CLI signs in with.

- ``computed account create|ls`` work on the store directly; a secret is printed once and
  stored only sealed (the key that seals it is a 0600 file beside the store).
- ``Accounts.bootstrap`` (run by ``computed serve``) makes the first admin on an empty store
  and writes its credentials to a 0600 file; never again after that.
- ``computed/cli/credentials.py``: environment, then a profile file, then the first admin's
  file under the state directory; and end to end against a real server (waitress on a
  free port, libvirt's test driver, a fake image).
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import click
import pytest
import waitress
from click.testing import CliRunner

import images.library
from api.app import create_app
from computed.accounts.registry import ADMIN_CREDENTIALS_FILE, KEY_FILE, Accounts, Caller
from computed.cli import cli, credentials
from computed.store.engine import Database
from computed.accounts.secret_box import SecretBox
from computed.settings import Settings
from images.library import ImageLibrary
from tests.unit.conftest import find_free_ports
from tests.fakes import publish_with_disk
from tests.http_server import ThreadedServer

ACCESS_KEY_ID = re.compile(r"AKCD[A-Z2-7]{16}")
CREDENTIAL_FIELDS = {"account_id", "name", "admin", "access_key_id", "secret_access_key"}


# -- helpers ---------------------------------------------------------------------------------

def clean_env(tmp_path: Path, **env: str | None) -> dict[str, str | None]:
    """A CliRunner environment: no COMPUTED_* variable of the caller's, the state directory
    TMP_PATH/var, the profile file's default place under TMP_PATH/config, then ENV."""
    base: dict[str, str | None] = {k: None for k in os.environ if k.startswith("COMPUTED_")}
    base |= {"COMPUTED_VAR_DIR": str(tmp_path / "var"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
             "COLUMNS": "200"}
    return base | env


@pytest.fixture
def var(tmp_path) -> Path:
    return tmp_path / "var"


@pytest.fixture
def run(tmp_path):
    """run(*args, **env) -> click Result of ``computed ARGS`` in a clean environment."""

    def invoke(*args: str, **env: str | None):
        return CliRunner(env=clean_env(tmp_path, **env)).invoke(cli, list(args), catch_exceptions=False)

    return invoke


def created(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def store_accounts(var: Path) -> tuple[Accounts, Database]:
    settings = Settings.load(environ={}, var_dir=var)
    db = Database(settings.database_url)
    return Accounts(db, SecretBox(var / KEY_FILE)), db


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- computed account create | ls -----------------------------------------------------------

def test_account_create_prints_credentials_once(run, var):
    alice = created(run("account", "create", "alice"))
    assert set(alice) == CREDENTIAL_FIELDS
    assert re.fullmatch(r"[1-9][0-9]{11}", alice["account_id"])
    assert alice["name"] == "alice" and alice["admin"] is False
    assert ACCESS_KEY_ID.fullmatch(alice["access_key_id"])
    assert len(alice["secret_access_key"]) >= 40

    root = created(run("account", "create", "root", "--admin"))
    assert root["admin"] is True and root["account_id"] != alice["account_id"]
    assert root["access_key_id"] != alice["access_key_id"]

    # the credentials work: the store opens the sealed secret for the key id
    accounts, db = store_accounts(var)
    try:
        assert accounts.lookup(alice["access_key_id"]) == (Caller(alice["account_id"], "alice", False),
                                                            alice["secret_access_key"])
        assert accounts.lookup(root["access_key_id"])[0].admin is True
    finally:
        db.dispose()


def test_account_create_refuses_a_duplicate_or_bad_name(run):
    created(run("account", "create", "alice"))
    again = run("account", "create", "alice")
    assert again.exit_code == 1 and again.stdout == ""
    assert "InvalidParameterValue" in again.stderr and "'alice' already exists" in again.stderr
    admin_again = run("account", "create", "alice", "--admin")
    assert admin_again.exit_code == 1 and "already exists" in admin_again.stderr
    bad = run("account", "create", "no spaces")
    assert bad.exit_code == 1 and "account name" in bad.stderr
    listed = json.loads(run("account", "ls", "--json").stdout)
    assert [a["name"] for a in listed] == ["alice"]


def test_account_ls_never_shows_a_secret(run):
    alice = created(run("account", "create", "alice"))
    root = created(run("account", "create", "root", "--admin"))
    listed = run("account", "ls", "--json")
    assert listed.exit_code == 0
    rows = {a["name"]: a for a in json.loads(listed.stdout)}
    assert set(rows) == {"alice", "root"}
    assert set(rows["alice"]) == {"id", "name", "admin", "created_at", "access_key_ids", "inactive_access_key_ids"}
    assert rows["alice"]["id"] == alice["account_id"] and rows["alice"]["admin"] is False
    assert rows["alice"]["access_key_ids"] == [alice["access_key_id"]]
    assert rows["root"]["admin"] is True

    table = run("account", "ls")
    assert table.exit_code == 0
    for creds in (alice, root):
        assert creds["account_id"] in table.stdout and creds["access_key_id"] in table.stdout
    for output in (listed.output, table.output):
        assert alice["secret_access_key"] not in output and root["secret_access_key"] not in output


def test_secrets_are_stored_sealed_only(run, var):
    secrets = [created(run("account", "create", name))["secret_access_key"] for name in ("alice", "bob")]
    files = files_under(var)
    assert any(p.name == "computed.db" for p in files)  # the store is there to be searched
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"a secret in clear in {path}"
    key_file = var / KEY_FILE
    assert key_file == var / "secrets" / "access-keys.key"
    assert mode(key_file) == 0o600
    assert key_file.read_bytes().strip() not in b"".join(p.read_bytes() for p in files if p != key_file)


# -- the first admin ---------------------------------------------------------------------------

def test_bootstrap_makes_the_first_admin_once(var):
    accounts, db = store_accounts(var)
    path = var / ADMIN_CREDENTIALS_FILE
    try:
        creds = accounts.bootstrap(path)
        assert creds is not None and creds.admin and creds.name == "admin"
        assert mode(path) == 0o600
        data = json.loads(path.read_text())
        assert data == creds.to_dict()
        assert accounts.lookup(data["access_key_id"]) == (creds.caller, data["secret_access_key"])
        before = (path.read_bytes(), path.stat().st_mtime_ns)

        assert accounts.bootstrap(path) is None
        assert (path.read_bytes(), path.stat().st_mtime_ns) == before
        assert [a.name for a in accounts.list()] == ["admin"]
        assert not [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}")]  # no temp file left
    finally:
        db.dispose()


def test_bootstrap_leaves_a_store_with_accounts_alone(run, var):
    created(run("account", "create", "alice"))
    accounts, db = store_accounts(var)
    try:
        assert accounts.bootstrap(var / ADMIN_CREDENTIALS_FILE) is None
        assert not (var / ADMIN_CREDENTIALS_FILE).exists()
        assert [a.name for a in accounts.list()] == ["alice"]
    finally:
        db.dispose()


def test_serve_bootstraps_the_admin_then_serves(run, var, monkeypatch):
    served = []
    monkeypatch.setattr(waitress, "serve", lambda app, **kwargs: served.append(kwargs))
    path = var / ADMIN_CREDENTIALS_FILE
    env = {"COMPUTED_LIBVIRT_URI": "test:///default"}

    first = run("serve", "--port", "18080", **env)
    assert first.exit_code == 0, first.output
    assert f"created the admin account; its credentials are in {path}" in first.stderr
    assert len(served) == 1 and served[0]["port"] == 18080
    assert mode(path) == 0o600
    admin = json.loads(path.read_text())
    assert admin["admin"] is True and admin["secret_access_key"] not in first.output

    second = run("serve", "--port", "18080", **env)
    assert second.exit_code == 0, second.output
    assert "created the admin account" not in second.stderr and len(served) == 2
    assert json.loads(path.read_text()) == admin
    listed = json.loads(run("account", "ls", "--json").stdout)
    assert [(a["name"], a["admin"]) for a in listed] == [("admin", True)]


# -- which credentials the CLI uses ------------------------------------------------------------

@pytest.fixture
def find(tmp_path, monkeypatch):
    """find(profile=None) -> (key id, secret) as the CLI resolves them, in an environment
    without COMPUTED_* variables, the default profile file under TMP_PATH/config and the
    state directory VAR."""
    for name in list(os.environ):
        if name.startswith("COMPUTED_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    settings = Settings.load(environ={}, var_dir=tmp_path / "var")

    def resolve(profile: str | None = None) -> tuple[str, str]:
        return credentials.find(settings, profile)

    return resolve


def write_profiles(path: Path, **profiles: tuple[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"[{name}]\naccess_key_id = {key}\nsecret_access_key = {secret}\n\n"
                            for name, (key, secret) in profiles.items()))
    return path


def write_admin_file(var: Path, key: str, secret: str) -> None:
    var.mkdir(parents=True, exist_ok=True)
    (var / ADMIN_CREDENTIALS_FILE).write_text(json.dumps({"access_key_id": key, "secret_access_key": secret}))


def fails(find, profile=None) -> str:
    with pytest.raises(click.ClickException) as raised:
        find(profile)
    return raised.value.message


def test_environment_wins(find, tmp_path, var, monkeypatch):
    write_profiles(tmp_path / "config" / "computed" / "credentials", default=("AKCDPROFILE", "from-profile"))
    write_admin_file(var, "AKCDADMIN", "from-admin-file")
    monkeypatch.setenv("COMPUTED_ACCESS_KEY_ID", "AKCDENV")
    monkeypatch.setenv("COMPUTED_SECRET_ACCESS_KEY", "from-env")
    assert find() == ("AKCDENV", "from-env")
    assert find("default") == ("AKCDENV", "from-env")


@pytest.mark.parametrize("variable", ["COMPUTED_ACCESS_KEY_ID", "COMPUTED_SECRET_ACCESS_KEY"])
def test_only_one_environment_variable_is_an_error(find, var, monkeypatch, variable):
    write_admin_file(var, "AKCDADMIN", "from-admin-file")  # no silent fall-back either
    monkeypatch.setenv(variable, "something")
    message = fails(find)
    assert "COMPUTED_ACCESS_KEY_ID" in message and "COMPUTED_SECRET_ACCESS_KEY" in message


def test_profiles(find, tmp_path, var, monkeypatch):
    default_place = write_profiles(tmp_path / "config" / "computed" / "credentials",
                                   default=("AKCDDEFAULT", "default-secret"), bob=("AKCDBOB", "bob-secret"))
    write_admin_file(var, "AKCDADMIN", "from-admin-file")
    assert find() == ("AKCDDEFAULT", "default-secret")
    assert find("bob") == ("AKCDBOB", "bob-secret")
    assert f"no profile [carol] in {default_place}" in fails(find, "carol")

    elsewhere = write_profiles(tmp_path / "elsewhere.ini", default=("AKCDOTHER", "other-secret"),
                               broken=("AKCDBROKEN", ""))
    monkeypatch.setenv("COMPUTED_CREDENTIALS_FILE", str(elsewhere))
    assert find() == ("AKCDOTHER", "other-secret")
    assert "no profile [bob]" in fails(find, "bob")
    assert "[broken] needs access_key_id and secret_access_key" in fails(find, "broken")

    elsewhere.write_text("this is not an INI file\n")
    assert str(elsewhere) in fails(find)


def test_falls_back_to_the_admin_file_then_explains(find, tmp_path, var):
    message = fails(find)
    assert "COMPUTED_ACCESS_KEY_ID" in message and "COMPUTED_SECRET_ACCESS_KEY" in message
    assert str(tmp_path / "config" / "computed" / "credentials") in message
    assert "computed account create" in message

    var.mkdir()
    (var / ADMIN_CREDENTIALS_FILE).write_text("{not json")
    assert "computed account create" in fails(find)
    write_admin_file(var, "AKCDADMIN", "from-admin-file")
    assert find() == ("AKCDADMIN", "from-admin-file")
    # a profile file without the default profile still falls back
    write_profiles(tmp_path / "config" / "computed" / "credentials", bob=("AKCDBOB", "bob-secret"))
    assert find() == ("AKCDADMIN", "from-admin-file")


# -- end to end against a real server ----------------------------------------------------------

IMAGE = "debian-12-podman"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base URL, state directory, {name: credentials dict}): the API under waitress on a
    free port of 127.0.0.1, its first admin bootstrapped, and accounts alice and bob."""
    var = tmp_path_factory.mktemp("server-var")
    settings = Settings.load(environ={}, var_dir=var, libvirt_uri="test:///default", ssh_ports=find_free_ports(20))
    with pytest.MonkeyPatch.context() as patch:  # a throw-away store: skip publish's fsyncs
        patch.setattr(images.library, "_fsync_tree", lambda path: None)
        patch.setattr(images.library, "_fsync_dir", lambda path: None)
        publish_with_disk(ImageLibrary(settings.image_library), IMAGE)
    app = create_app(settings)
    service = app.extensions["computed"]
    accounts = {"admin": service.accounts.bootstrap(var / ADMIN_CREDENTIALS_FILE).to_dict(),
                "alice": service.accounts.create("alice").to_dict(),
                "bob": service.accounts.create("bob").to_dict()}
    httpd = ThreadedServer(app)
    try:
        yield httpd.url, var, accounts
    finally:
        admin = Caller(accounts["admin"]["account_id"], "admin", admin=True)
        rows, _ = service.instances.describe(admin, limit=1000)
        for inst in rows:  # leave no domain behind in the process-wide test:///default
            if inst.state not in ("terminated", "shutting-down"):
                service.instances.terminate(admin, inst.id)
        service.worker.idle(timeout=10)
        httpd.close()
        service.close()


@pytest.fixture
def remote(server, tmp_path, monkeypatch):
    """remote(*args, account=None, secret=None, **env) -> click Result of a service command
    with ACCOUNT's credentials in the environment (none if None; SECRET replaces its secret)."""
    url, _, accounts = server
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str, account: str | None = None, secret: str | None = None, **env: str | None):
        if account is not None:
            env = {"COMPUTED_ACCESS_KEY_ID": accounts[account]["access_key_id"],
                   "COMPUTED_SECRET_ACCESS_KEY": secret or accounts[account]["secret_access_key"]} | env
        env = clean_env(tmp_path, COMPUTED_API_URL=url, **env)
        return CliRunner(env=env).invoke(cli, list(args), catch_exceptions=False)

    return invoke


def listed_ids(result) -> set[str]:
    assert result.exit_code == 0, result.output
    return {i["id"] for i in json.loads(result.stdout)}


def test_cli_signs_in_with_good_credentials_only(remote, server):
    _, _, accounts = server
    assert remote("ls", account="alice").exit_code == 0
    listed_ids(remote("ls", "--json", account="alice"))

    wrong = remote("ls", account="alice", secret="w" * 40)
    assert wrong.exit_code == 1 and "AuthFailure" in wrong.stderr
    assert accounts["alice"]["secret_access_key"] not in wrong.output
    unknown = remote("ls", COMPUTED_ACCESS_KEY_ID="AKCD" + "Q" * 16, COMPUTED_SECRET_ACCESS_KEY="x" * 40)
    assert unknown.exit_code == 1 and "AuthFailure" in unknown.stderr
    half = remote("ls", COMPUTED_ACCESS_KEY_ID=accounts["alice"]["access_key_id"])
    assert half.exit_code == 1 and "set both" in half.stderr
    nothing = remote("ls")  # this client's state directory has no admin file
    assert nothing.exit_code == 1 and "computed account create" in nothing.stderr


def test_cli_credentials_from_profiles_and_the_admin_file(remote, server, tmp_path):
    _, var, accounts = server
    launched = remote("launch", "--size", "t3.nano", "--no-wait", account="alice")
    assert launched.exit_code == 0, launched.output
    instance_id = launched.stdout.split()[0]
    assert instance_id.startswith("i-")

    profiles = write_profiles(tmp_path / "profiles.ini",
                              default=(accounts["bob"]["access_key_id"], accounts["bob"]["secret_access_key"]),
                              alice=(accounts["alice"]["access_key_id"], accounts["alice"]["secret_access_key"]))
    with_file = {"COMPUTED_CREDENTIALS_FILE": str(profiles)}
    assert instance_id not in listed_ids(remote("ls", "--json", **with_file))                # [default]: bob
    assert instance_id in listed_ids(remote("ls", "--json", "--profile", "alice", **with_file))
    assert instance_id in listed_ids(remote("ls", "--json", COMPUTED_PROFILE="alice", **with_file))
    missing = remote("ls", "--profile", "carol", **with_file)
    assert missing.exit_code == 1 and "no profile [carol]" in missing.stderr

    # on the service's machine, with nothing else: the first admin's file, which sees everyone's
    as_admin = remote("ls", "--json", COMPUTED_VAR_DIR=str(var))
    assert instance_id in listed_ids(as_admin)
    assert remote("show", instance_id, "--json", account="bob").exit_code == 1
    assert remote("terminate", instance_id, COMPUTED_VAR_DIR=str(var)).exit_code == 0


# -- issue 17, finding 9: the database URL's password is never printed -------------------------

def test_shown_url_masks_the_password():
    from computed.store.engine import shown_url
    assert shown_url("postgresql+psycopg://computed:hunter2@db.example.org/computed") == \
        "postgresql+psycopg://computed:***@db.example.org/computed"
    assert shown_url("sqlite:////var/lib/computed/computed.db") == "sqlite:////var/lib/computed/computed.db"
    assert "hunter2" not in shown_url("postgresql://u:hunter2@[bad")


def test_serve_masks_the_database_password(run, monkeypatch, new_postgres_database, caplog):
    from sqlalchemy import make_url
    served = []
    monkeypatch.setattr(waitress, "serve", lambda app, **kwargs: served.append(kwargs))
    # the throwaway server trusts loopback: any password is accepted, and must not be shown
    url = make_url(new_postgres_database()).set(password="hunter2-secret").render_as_string(hide_password=False)
    result = run("serve", "--port", "18080", COMPUTED_LIBVIRT_URI="test:///default", COMPUTED_DATABASE_URL=url)
    assert result.exit_code == 0, result.output
    assert len(served) == 1
    assert "hunter2-secret" not in result.output and "hunter2-secret" not in caplog.text
    assert ":***@127.0.0.1" in result.stderr


def test_a_database_url_that_does_not_parse_is_not_quoted():
    from sqlalchemy.exc import ArgumentError
    from computed.store.engine import make_engine
    with pytest.raises(ArgumentError) as info:
        make_engine("postgresql+psycopg//computed:hunter2-secret@db/computed")
    assert "hunter2-secret" not in str(info.value)
