"""Launches under concurrency against a real server (waitress, many request threads): a
client token launches once however many requests carry it, and an account's limits and
the host's room are reached exactly, never passed; a refused launch leaves nothing behind.
Also the limits one at a time, their settings, and a token race lost in the database."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import requests
from sqlalchemy import select

from computed.errors import IdempotentParameterMismatch
from computed.compute.launch import LaunchRequest, Launcher
from computed.store.models import Instance, UsageEvent
from computed.service import Service
from computed.settings import Settings, SettingsError

from tests.at_once import at_once as released_together
from tests.http_server import ThreadedServer
from tests.unit.conftest import DOMAIN_PREFIX, IMAGE

AT_ONCE = 50


@dataclass
class Server:
    url: str
    service: Service
    auth: tuple[str, str]

    def launch(self, body: dict, auth: tuple[str, str] | None = None) -> requests.Response:
        return requests.post(f"{self.url}/v1/instances", json=body, auth=auth or self.auth, timeout=60)


@pytest.fixture
def serve(make_app):
    """serve(**setting_changes) -> Server: make_app's app under waitress on a loopback port,
    with a request thread for every request a test sends at once."""
    running = []

    def start(**changes) -> Server:
        app = make_app(**changes)
        server = ThreadedServer(app, threads=AT_ONCE)
        running.append(server)
        return Server(server.url, app.extensions["computed"], app.config["TEST_AUTH"])

    yield start
    for server in running:
        server.close()


def at_once(send, n: int = AT_ONCE) -> list[requests.Response]:
    return released_together(send, n)


def codes(responses) -> dict[str, int]:
    """How many answers had each error code ("" for 202)."""
    counted: dict[str, int] = {}
    for r in responses:
        code = "" if r.status_code == 202 else r.json()["error"]["code"]
        counted[code] = counted.get(code, 0) + 1
    return counted


def launched_ids(responses) -> set[str]:
    return {i["id"] for r in responses if r.status_code == 202 for i in r.json()["instances"]}


def everything_of(svc: Service) -> dict[str, set[str]]:
    """The instance ids found in each place a launch leaves something: rows, usage events,
    instance directories, libvirt domains."""
    with svc.db.reading() as s:
        rows = set(s.scalars(select(Instance.id)))
        events = set(s.scalars(select(UsageEvent.instance_id)))
    files = {p.name for p in svc.settings.instances_dir.iterdir()}
    domains = {d.name().removeprefix(DOMAIN_PREFIX) for d in svc.default_driver.conn().listAllDomains()
               if d.name().startswith(DOMAIN_PREFIX)}
    return {"rows": rows, "usage events": events, "files": files, "domains": domains}


def only(svc: Service, launched: set[str]) -> None:
    """Once the worker is idle: LAUNCHED, and nothing else, in every place (everything_of)."""
    assert svc.worker.idle(60)
    assert everything_of(svc) == dict.fromkeys(("rows", "usage events", "files", "domains"), launched)


# -- client tokens -------------------------------------------------------------------------

def test_one_token_sent_at_once_launches_once(serve):
    server = serve()
    body = {"size": "t3.micro", "count": 2, "tags": {"a": "b"}, "client_token": "at-once"}
    responses = at_once(lambda i: server.launch(body))
    assert codes(responses) == {"": AT_ONCE}
    answers = {tuple(i["id"] for i in r.json()["instances"]) for r in responses}
    assert len(answers) == 1
    [launched] = answers
    assert len(launched) == 2
    assert {r.json()["reservation_id"] for r in responses} == {responses[0].json()["reservation_id"]}
    only(server.service, set(launched))


def test_one_token_with_different_sizes_at_once_launches_one(serve, tmp_path):
    sizes = tmp_path / "sizes.toml"
    sizes.write_text("".join(f'[[size]]\nname = "s{i:02}"\nvcpus = 1\nmemory_mib = 64\ndisk_gib = 1\n'
                             f'price_per_hour = "0.01"\n' for i in range(AT_ONCE)))
    server = serve(sizes_file=sizes)
    responses = at_once(lambda i: server.launch({"size": f"s{i:02}", "client_token": "one-of-many"}))
    assert codes(responses) == {"": 1, "IdempotentParameterMismatch": AT_ONCE - 1}
    assert all(r.status_code == 400 for r in responses if r.status_code != 202)
    [winner] = [r for r in responses if r.status_code == 202]
    only(server.service, launched_ids([winner]))


def test_a_token_race_lost_in_the_database_answers_the_winners(app, service, monkeypatch):
    """Where writers run side by side (PostgreSQL), two launches with one token can both
    find no earlier one; the unique (owner, client_token, launch_index) refuses the second,
    which then answers the first's instances."""
    caller = app.config["TEST_CALLER"]
    req = LaunchRequest(size="t3.micro", image=IMAGE, count=2, client_token="raced")
    first, created = service.instances.launch(caller, req)
    assert created
    real, lookups = Launcher._earlier, []

    def blind(self, *args):  # the first two lookups of each launch miss the winner
        lookups.append(args)
        return [] if len(lookups) <= 2 else real(self, *args)

    monkeypatch.setattr(Launcher, "_earlier", blind)
    again, created = service.instances.launch(caller, req)
    assert not created and [i.id for i in again] == [i.id for i in first]
    lookups.clear()
    with pytest.raises(IdempotentParameterMismatch):
        service.instances.launch(caller, dataclasses.replace(req, size="t3.small"))
    only(service, {i.id for i in first})


# -- an account's limits -------------------------------------------------------------------

@pytest.mark.parametrize("setting, limit, allowed", [
    ("account_max_instances", 4, 4),
    ("account_max_vcpus", 7, 3),  # t3.nano: 2 vCPUs
    ("account_max_memory_mib", 2600, 5),  # t3.nano: 512 MiB
])
def test_an_account_limit_sent_at_once_is_reached_not_passed(serve, setting, limit, allowed):
    server = serve(**{setting: limit})
    other = server.service.accounts.create("other")
    responses = at_once(lambda i: server.launch({"size": "t3.nano"}))
    assert codes(responses) == {"": allowed, "InstanceLimitExceeded": AT_ONCE - allowed}
    assert all(r.status_code == 400 for r in responses if r.status_code != 202)
    launched = launched_ids(responses)
    assert len(launched) == allowed
    # the limit is the account's: another account launches as much again
    again = at_once(lambda i: server.launch({"size": "t3.nano"}, (other.access_key_id, other.secret_access_key)),
                    n=allowed + 2)
    assert codes(again) == {"": allowed, "InstanceLimitExceeded": 2}
    only(server.service, launched | launched_ids(again))


def ids(response) -> list[str]:
    """The instance ids of a test client's launch answer."""
    return [i["id"] for i in response.get_json()["instances"]]


def test_account_limits_one_at_a_time(make_app, wait, expect_error):
    app = make_app(account_max_instances=3)
    client, svc = app.test_client(), app.extensions["computed"]
    first = client.post("/v1/instances", json={"size": "t3.micro", "count": 2, "client_token": "two"})
    assert first.status_code == 202
    message = expect_error(client.post("/v1/instances", json={"size": "t3.micro", "count": 2}), 400,
                           "InstanceLimitExceeded")
    assert "limit is 3 instances" in message and "2 in use" in message and "2 requested" in message
    # a retry of a launch is no new launch: it answers at the limit too
    again = client.post("/v1/instances", json={"size": "t3.micro", "count": 2, "client_token": "two"})
    assert again.status_code == 202 and ids(again) == ids(first)
    third = client.post("/v1/instances", json={"size": "t3.micro"})
    assert third.status_code == 202
    wait(svc)
    # a stopped instance keeps its place; a terminated one gives it back
    stopped, terminated = ids(first)
    assert client.post(f"/v1/instances/{stopped}/stop").status_code == 202
    wait(svc)
    assert client.get(f"/v1/instances/{stopped}").get_json()["state"]["name"] == "stopped"
    expect_error(client.post("/v1/instances", json={"size": "t3.micro"}), 400, "InstanceLimitExceeded")
    assert client.delete(f"/v1/instances/{terminated}").status_code == 202
    wait(svc)
    assert client.post("/v1/instances", json={"size": "t3.micro"}).status_code == 202
    assert client.post(f"/v1/instances/{stopped}/start").status_code == 202
    wait(svc)
    assert svc.instances.count() == 4


# -- the host's room -----------------------------------------------------------------------

@pytest.mark.parametrize("changes, allowed, what", [
    ({"cpu_overcommit": 0.5}, 4, "8 vCPUs"),  # the test driver's 16 CPUs; t3.nano: 2 vCPUs
    ({"memory_overcommit": 1.0}, 6, "3072 MiB"),  # its 3072 MiB; t3.nano: 512 MiB
])
def test_the_host_sent_at_once_is_filled_not_overfilled(serve, changes, allowed, what):
    server = serve(**changes)
    accounts = [server.auth] + [(c.access_key_id, c.secret_access_key)
                                for c in (server.service.accounts.create(f"a{i}") for i in range(4))]
    responses = at_once(lambda i: server.launch({"size": "t3.nano"}, accounts[i % len(accounts)]))
    assert codes(responses) == {"": allowed, "InsufficientInstanceCapacity": AT_ONCE - allowed}
    refused = [r for r in responses if r.status_code != 202]
    assert all(r.status_code == 503 for r in refused)
    assert f"room for {what}" in refused[0].json()["error"]["message"]
    only(server.service, launched_ids(responses))


def test_the_host_one_at_a_time(make_app, wait, expect_error):
    app = make_app(cpu_overcommit=0.25)  # 4 vCPUs: two t3 instances
    client, svc = app.test_client(), app.extensions["computed"]
    message = expect_error(client.post("/v1/instances", json={"size": "t3.nano", "count": 3}), 503,
                           "InsufficientInstanceCapacity")
    # placed one at a time, the third finds no room
    assert message == ("no host can take a t3.nano for instance 3 of 3 (local: room for 4 vCPUs (16 times the "
                       "overcommit ratio 0.25): 4 in use, 2 needed)")
    [instance] = client.post("/v1/instances", json={"size": "t3.nano"}).get_json()["instances"]
    assert client.post("/v1/instances", json={"size": "t3.nano"}).status_code == 202
    expect_error(client.post("/v1/instances", json={"size": "t3.nano"}), 503, "InsufficientInstanceCapacity")
    wait(svc)
    assert client.delete(f"/v1/instances/{instance['id']}").status_code == 202
    wait(svc)
    assert client.post("/v1/instances", json={"size": "t3.nano"}).status_code == 202


# -- settings ------------------------------------------------------------------------------

def test_limit_settings(tmp_path):
    s = Settings.load({"COMPUTED_VAR_DIR": str(tmp_path)})
    assert (s.account_max_instances, s.account_max_vcpus, s.account_max_memory_mib) == (20, None, None)
    assert (s.cpu_overcommit, s.memory_overcommit) == (4.0, 1.0)
    (tmp_path / "computed.toml").write_text("[limits]\naccount_max_vcpus = 16\ncpu_overcommit = 2\n"
                                            "memory_overcommit = 1.5\n")
    s = Settings.load({"COMPUTED_VAR_DIR": str(tmp_path), "COMPUTED_ACCOUNT_MAX_MEMORY_MIB": "8192",
                       "COMPUTED_CPU_OVERCOMMIT": "3.5"})
    assert (s.account_max_instances, s.account_max_vcpus, s.account_max_memory_mib) == (20, 16, 8192)
    assert (s.cpu_overcommit, s.memory_overcommit) == (3.5, 1.5)
    for env, value in [("COMPUTED_ACCOUNT_MAX_INSTANCES", "0"), ("COMPUTED_ACCOUNT_MAX_VCPUS", "-2"),
                       ("COMPUTED_CPU_OVERCOMMIT", "0"), ("COMPUTED_MEMORY_OVERCOMMIT", "nan"),
                       ("COMPUTED_MEMORY_OVERCOMMIT", "inf"), ("COMPUTED_CPU_OVERCOMMIT", "lots")]:
        with pytest.raises(SettingsError, match=env):
            Settings.load({"COMPUTED_VAR_DIR": str(tmp_path), env: value})
    (tmp_path / "computed.toml").write_text("[limits]\ncpu_overcommit = true\n")
    with pytest.raises(SettingsError, match=r"\[limits\] cpu_overcommit"):
        Settings.load({"COMPUTED_VAR_DIR": str(tmp_path)})
