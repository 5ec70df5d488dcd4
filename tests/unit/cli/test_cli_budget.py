"""``computed budget set|show|events|rm`` against the real API (Flask under waitress,
libvirt's test driver, a FakeClock and a size that costs 1.00 an hour), as the account
itself and as an admin naming it."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import requests

from api.app import create_app
from computed.clock import FakeClock
from computed.settings import Settings
from images.library import ImageLibrary
from tests.cleanup import terminate_all
from tests.cli_runner import run_cli
from tests.fakes import publish_with_disk
from tests.http_server import ThreadedServer
from tests.unit.conftest import find_free_ports
from tests.unit.billing.test_api_budgets import SIZES, T0

IMAGE = "debian-12-podman"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base URL, Service, FakeClock, {"admin": credentials, "user": credentials})."""
    var = tmp_path_factory.mktemp("var")
    (var / "sizes.toml").write_text(SIZES)
    low, high = find_free_ports(20)
    settings = Settings.load(environ={}, var_dir=var, libvirt_uri="test:///default", ssh_ports=(low, high),
                             memory_overcommit=8.0, sizes_file=var / "sizes.toml", budget_check_interval=3600)
    publish_with_disk(ImageLibrary(settings.image_library), IMAGE)
    clock = FakeClock(T0)
    app = create_app(settings, clock=clock)
    server = ThreadedServer(app)
    service = app.extensions["computed"]
    accounts = {"admin": service.accounts.create("ops", admin=True), "user": service.accounts.create("alice")}
    try:
        yield server.url, service, clock, accounts
    finally:
        terminate_all(service)
        server.close()
        service.close()


@pytest.fixture
def run(server, tmp_path, monkeypatch):
    """run(*args, who="user") -> click Result of ``computed ARGS`` with WHO's credentials."""
    monkeypatch.chdir(tmp_path)
    url, _, _, accounts = server

    def invoke(*args: str, who: str = "user"):
        return run_cli(url, accounts[who], tmp_path, *args)

    return invoke


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def test_set_show_events_rm(server, run):
    url, service, clock, accounts = server
    refused = run("budget", "show")
    assert refused.exit_code == 1 and "Error: InvalidBudget.NotFound: the account alice has no budget" in refused.output
    assert ok(run("budget", "set", "5", "--stop")) == (
        "budget 5 USD a month, action stop; 2026-03: spent 0 USD (0.00%)\n")
    creds = accounts["user"]
    launched = requests.post(f"{url}/v1/instances", json={"size": "unit"},
                             auth=(creds.access_key_id, creds.secret_access_key), timeout=10)
    assert launched.status_code == 202, launched.text
    iid = launched.json()["instances"][0]["id"]
    service.worker.idle(timeout=10)
    clock.set(T0 + dt.timedelta(hours=4, seconds=1))  # 5.00
    service.budgets.check()
    service.worker.idle(timeout=10)

    lines = ok(run("budget", "show")).splitlines()
    assert lines[0] == ("budget 5 USD a month, action stop; 2026-03: spent 5.00 USD (100.00%); "
                        "launches and starts refused")
    assert lines[1] == "2026-03   80%  2026-03-10 04:00:01  spent 5.00 of 5 USD"
    assert lines[2] == f"2026-03  100%  2026-03-10 04:00:01  spent 5.00 of 5 USD  stopped: {iid}"
    assert ok(run("budget", "events")).splitlines() == lines[1:]
    body = json.loads(ok(run("budget", "events", "--json")))
    assert [e["threshold"] for e in body["events"]] == [80, 100] and body["month"] == "2026-03"
    earlier = run("budget", "events", "--month", "2026-02")
    assert earlier.exit_code == 0 and earlier.stdout == "" and earlier.stderr == "no budget events in 2026-02\n"
    bad = run("budget", "events", "--month", "2026-2")
    assert bad.exit_code == 1 and "Error: InvalidParameterValue: month:" in bad.output

    launch = run("launch", "--size", "unit", "--no-wait")
    assert launch.exit_code == 1 and "Error: BudgetExceeded: the account alice has spent 5.00 USD" in launch.output
    assert ok(run("budget", "set", "20")).startswith("budget 20 USD a month, action stop; ")  # keeps its action
    assert json.loads(ok(run("budget", "show", "--json")))["launches_refused"] is False
    bad = run("budget", "set", "1.001")
    assert bad.exit_code == 1 and "Error: InvalidParameterValue: amount: at most 2 decimal places" in bad.output
    assert ok(run("budget", "set", "20", "--notify")).startswith("budget 20 USD a month, action notify; ")

    removed = run("budget", "rm")
    assert removed.exit_code == 0 and removed.stderr == "removed the budget\n"
    assert run("budget", "show").exit_code == 1
    assert len(ok(run("budget", "events")).splitlines()) == 2  # the events stay


def test_admins_name_the_account(server, run):
    _, _, _, accounts = server
    alice, ops = accounts["user"].account_id, accounts["admin"].account_id
    assert ok(run("budget", "set", "7.50", "--account", alice, who="admin")).startswith(
        "budget 7.50 USD a month, action notify; ")
    assert json.loads(ok(run("budget", "show", "--json")))["amount"] == "7.50"
    assert json.loads(ok(run("budget", "show", "--json", "--account", alice, who="admin")))["account_name"] == "alice"
    refused = run("budget", "show", "--account", ops)
    assert refused.exit_code == 1 and "Error: UnauthorizedOperation:" in refused.output
    refused = run("budget", "rm", "--account", ops)
    assert refused.exit_code == 1 and "Error: UnauthorizedOperation:" in refused.output
    assert run("budget", "rm", "--account", alice, who="admin").exit_code == 0
    assert run("budget", "show").exit_code == 1
