"""``computed host add|ls|show|disable|enable|rm|rotate-key`` against the real API (Flask under
waitress, libvirt's test driver as the host ``local``, test driver nodes of their own as
further hosts), with an admin's credentials, and a non-admin's refused."""

from __future__ import annotations

import json
import time

import pytest
import requests

from api.app import create_app
from computed.settings import Settings
from images.library import ImageLibrary
from tests.cli_runner import run_cli
from tests.fakes import publish_with_disk
from tests.cleanup import ADMIN, terminate_all
from tests.http_server import ThreadedServer
from tests.unit.conftest import find_free_ports, write_node_xml

IMAGE = "debian-12-podman"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base URL, Service, {"admin": credentials, "user": credentials}): the API served from a
    background thread, its store with an admin and a non-admin account."""
    var = tmp_path_factory.mktemp("var")
    low, high = find_free_ports(20)
    settings = Settings.load(environ={}, var_dir=var, libvirt_uri="test:///default", ssh_ports=(low, high),
                             memory_overcommit=8.0)  # the test driver's host has 3 GiB
    publish_with_disk(ImageLibrary(settings.image_library), IMAGE)
    app = create_app(settings)
    server = ThreadedServer(app)
    service = app.extensions["computed"]
    accounts = {"admin": service.accounts.create("ops", admin=True), "user": service.accounts.create("alice")}
    try:
        yield server.url, service, accounts
    finally:
        terminate_all(service)  # leave no domains behind in the process-wide test:///default host
        server.close()
        service.close()


@pytest.fixture
def run(server, tmp_path, monkeypatch):
    """run(*args, who="admin") -> click Result of ``computed ARGS`` with WHO's credentials."""
    monkeypatch.chdir(tmp_path)
    url, _, accounts = server

    def invoke(*args: str, who: str = "admin"):
        return run_cli(url, accounts[who], tmp_path, *args)

    return invoke


@pytest.fixture
def node(tmp_path):
    """node(cpus, memory_mib) -> the URI of a test driver node of that size."""
    return lambda cpus=4, memory_mib=2048: write_node_xml(tmp_path / f"node-{cpus}-{memory_mib}.xml", cpus,
                                                          memory_mib)


def shown(run, name: str) -> dict:
    result = run("host", "show", name)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def listed(run) -> dict[str, dict]:
    result = run("host", "ls", "--json")
    assert result.exit_code == 0, result.output
    return {h["name"]: h for h in json.loads(result.stdout)}


def row(table: str, name: str) -> list[str]:
    return next(line.split() for line in table.splitlines() if line.split()[:1] == [name])


def launch(server, who: str = "user") -> str:
    url, service, accounts = server
    creds = accounts[who]
    response = requests.post(f"{url}/v1/instances", json={"size": "t3.micro"},
                             auth=(creds.access_key_id, creds.secret_access_key), timeout=10)
    assert response.status_code == 202, response.text
    service.worker.idle(timeout=10)
    return response.json()["instances"][0]["id"]


def test_add_ls_show(run, node):
    uri = node(cpus=4, memory_mib=2048)
    added = run("host", "add", "node-ls", uri, "--address", "127.0.2.2")
    assert added.exit_code == 0, added.output
    assert added.stderr == f"added host node-ls ({uri}, 4 CPUs, 2048 MiB, enabled)\n"
    host = shown(run, "node-ls")
    assert (host["uri"], host["address"], host["enabled"], host["reachable"], host["image_mode"]) == (
        uri, "127.0.2.2", True, True, "shared")
    assert host["capacity"] == {"vcpus": 4, "memory_mib": 2048}
    assert host["room"] == {"vcpus": 16, "memory_mib": 16384}
    assert listed(run)["node-ls"] == host

    table = run("host", "ls")
    assert table.exit_code == 0, table.output
    header = table.stdout.splitlines()[0].split()
    assert header[:5] == ["NAME", "URI", "ADDRESS", "ENABLED", "REACHABLE"] and header[-1] == "INSTANCES"
    assert row(table.stdout, "node-ls") == ["node-ls", uri, "127.0.2.2", "yes", "yes", "0/16", "0/16384", "0"]
    local = row(table.stdout, "local")  # its reachability: whenever the service's first check is done
    assert local[:4] + local[5:] == ["local", "test:///default", "127.0.0.1", "yes", "0/64", "0/24576", "0"]
    assert run("host", "rm", "node-ls").exit_code == 0


def test_add_options_and_refusals(run, node):
    copy = run("host", "add", "node-copy", node(cpus=2, memory_mib=1024), "--image-mode", "copy",
               "--storage-dir", "/srv/computed", "--disabled")
    assert copy.exit_code == 0, copy.output
    assert copy.stderr.endswith(", 2 CPUs, 1024 MiB, disabled)\n")
    host = shown(run, "node-copy")
    assert (host["image_mode"], host["storage_dir"], host["enabled"]) == ("copy", "/srv/computed", False)

    again = run("host", "add", "node-copy", node(cpus=8))
    assert again.exit_code == 1 and "Error: InvalidHost.Duplicate: " in again.stderr
    no_dir = run("host", "add", "node-x", node(cpus=8), "--image-mode", "copy")
    assert no_dir.exit_code == 1 and "storage_dir: a host in copy mode needs storage_dir" in no_dir.stderr
    bad_mode = run("host", "add", "node-x", node(cpus=8), "--image-mode", "other")
    assert bad_mode.exit_code == 2 and "'other' is not one of 'shared', 'copy'" in bad_mode.stderr
    bad_name = run("host", "add", "Node_X", node(cpus=8))
    assert bad_name.exit_code == 1 and "InvalidParameterValue: name: 1 to 63 lower-case letters" in bad_name.stderr
    nowhere = run("host", "add", "node-x", "test:///nonexistent/node.xml")
    assert nowhere.exit_code == 1
    assert "Error: InvalidParameterValue: the host node-x cannot be added: " in nowhere.stderr
    assert "node-x" not in listed(run)
    assert run("host", "rm", "node-copy").exit_code == 0


def test_disable_enable(run, server, node):
    assert run("host", "add", "node-switch", node(cpus=6)).exit_code == 0
    try:
        off = run("host", "disable", "node-switch")
        assert off.exit_code == 0 and off.stderr == "disabled host node-switch\n"
        assert shown(run, "node-switch")["enabled"] is False
        assert row(run("host", "ls").stdout, "node-switch")[3] == "no"
        on = run("host", "enable", "node-switch")
        assert on.exit_code == 0 and on.stderr == "enabled host node-switch\n"
        assert shown(run, "node-switch")["enabled"] is True
        for command in ("disable", "enable", "show", "rm"):
            missing = run("host", command, "no-such-host")
            assert missing.exit_code == 1, command
            assert "Error: InvalidHostID.NotFound: the host 'no-such-host' does not exist" in missing.stderr
    finally:
        run("host", "rm", "node-switch")


def test_rm_is_refused_while_instances_are_there(run, server, node):
    _, service, _ = server
    assert run("host", "add", "node-rm", node(cpus=12)).exit_code == 0
    assert run("host", "disable", "local").exit_code == 0
    try:
        iid = launch(server)
    finally:
        assert run("host", "enable", "local").exit_code == 0
    assert service.instances.get(ADMIN, iid).host == "node-rm"
    assert row(run("host", "ls").stdout, "node-rm")[5:] == ["2/48", "1024/16384", "1"]

    refused = run("host", "rm", "node-rm")
    assert refused.exit_code == 1 and "Error: InvalidHost.InUse: the host node-rm has 1 instance(s)" in refused.stderr
    service.instances.terminate(ADMIN, iid)
    deadline = time.monotonic() + 10
    while service.instances.get(ADMIN, iid).state != "terminated":
        assert time.monotonic() < deadline, "the instance did not terminate"
        time.sleep(0.05)
    removed = run("host", "rm", "node-rm")
    assert removed.exit_code == 0 and removed.stderr == "removed host node-rm\n"
    assert "node-rm" not in listed(run)


def test_a_non_admin_is_refused(run, node):
    for args in (("ls",), ("show", "local"), ("add", "node-user", node()), ("disable", "local"), ("enable", "local"),
                 ("rm", "local")):
        result = run("host", *args, who="user")
        assert result.exit_code == 1, args
        assert "Error: UnauthorizedOperation: only an admin account may manage hosts" in result.stderr, args
    assert "node-user" not in listed(run) and listed(run)["local"]["enabled"] is True


def test_rotate_key(run, server):
    _, service, _ = server
    first = launch(server)
    old = service.management_keys.current("local")
    rotated = run("host", "rotate-key", "local")
    assert rotated.exit_code == 0, rotated.output
    new = service.management_keys.current("local")
    assert new.id != old.id
    assert rotated.stdout == f"{new.fingerprint}\n"
    assert f"{old.fingerprint} retired: still valid for 1 instance(s) that have it" in rotated.stderr
    # the private halves never leave the service: not in the output, not in the API's view
    for key in (old, new):
        body = key.path.read_text().splitlines()[1]
        assert body not in rotated.output and body not in json.dumps(shown(run, "local"))
    keys = shown(run, "local")["management_keys"]
    assert [(k["id"], k["instances"], k["retired_at"] is None) for k in keys] == [
        (new.id, 0, True), (old.id, 1, False)]
    second = launch(server)
    with service.db.reading() as s:
        from computed.store.models import Instance
        assert s.get(Instance, first).management_key_id == old.id
        assert s.get(Instance, second).management_key_id == new.id

    assert run("host", "rotate-key", "nope").exit_code == 1
    assert "the host 'nope' does not exist" in run("host", "rotate-key", "nope").stderr
    refused = run("host", "rotate-key", "local", who="user")
    assert refused.exit_code == 1 and "UnauthorizedOperation" in refused.stderr
    assert service.management_keys.current("local") == new
