"""``computed launch --port`` and ``computed port ls|add|rm`` against the real API (Flask
under waitress, libvirt's test driver), as a non-admin user."""

from __future__ import annotations

import json

from computed.hosts.addresses import port_is_free
from tests.unit.cli.test_cli_hosts import run, server  # noqa: F401 (fixtures)


def launched(result) -> str:
    assert result.exit_code == 0, result.output
    return result.stderr.split()[1].rstrip(",")


def ports(run, instance_id: str) -> list[dict]:  # noqa: F811
    result = run("port", "ls", instance_id, "--json", who="user")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_launch_with_ports_then_add_list_remove(run, server):  # noqa: F811
    low, high = server[1].settings.forward_ports  # a named host port is one of the forward range
    host_port = next(p for p in range(high, low - 1, -1) if port_is_free("127.0.0.1", p))
    instance_id = launched(run("launch", "--size", "t3.micro", "--port", f"{host_port}:80", "--port", "443",
                               "--no-wait", who="user"))
    _, service, _ = server
    service.worker.idle(timeout=10)
    listed = ports(run, instance_id)
    assert [(p["host_port"], p["guest_port"]) for p in listed if p["guest_port"] == 80] == [(host_port, 80)]
    assert {p["guest_port"] for p in listed} == {80, 443}

    shown = run("show", instance_id, who="user")
    assert f"127.0.0.1:{host_port} -> guest port 80/tcp" in shown.stdout

    added = run("port", "add", instance_id, "8080", who="user")
    assert added.exit_code == 0, added.output
    assert added.stdout.strip().endswith("-> guest port 8080/tcp")
    table = run("port", "ls", instance_id, who="user")
    assert "8080" in table.stdout and f"127.0.0.1:{host_port}" in table.stdout

    removed = run("port", "rm", instance_id, str(host_port), who="user")
    assert removed.exit_code == 0, removed.output
    assert {p["guest_port"] for p in ports(run, instance_id)} == {443, 8080}
    again = run("port", "rm", instance_id, str(host_port), who="user")
    assert again.exit_code != 0 and "InvalidPort.NotFound" in again.output


def test_bad_ports_are_refused_before_or_by_the_api(run):  # noqa: F811
    bad = run("launch", "--size", "t3.micro", "--port", "80:eighty", who="user")
    assert bad.exit_code == 2 and "--port" in bad.output and "HOST_PORT:GUEST_PORT" in bad.output
    privileged = run("launch", "--size", "t3.micro", "--port", "80:80", "--no-wait", who="user")
    assert privileged.exit_code != 0 and "privileged" in privileged.output
    assert "launched" not in privileged.output
