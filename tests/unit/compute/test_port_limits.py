"""Issue 17, finding 2: a tenant takes host ports only from the service's forward range,
within its account's limit of forwarded ports (counted over all its instances, reached
exactly under concurrency); never a port an instance holds as its SSH port, nor one
forwarded as another's SSH port; and a remote host's port is asked of that host, not
assumed free. Every refusal is a 4xx that leaves nothing behind."""

from __future__ import annotations

import socket

import pytest
from sqlalchemy import func, select, update

import computed.compute.ports
import computed.compute.ssh_ports
from computed.hosts.addresses import nothing_listens, port_is_free, port_is_free_on
from computed.store.models import Instance, PortForward
from tests.at_once import at_once


@pytest.fixture
def settings(settings, free_ports):
    """A forward range of 20 free ports apart from the SSH range, and a limit of 4 forwarded
    ports per account."""
    ssh_low, ssh_high = settings.ssh_ports
    while True:
        low, high = free_ports(20)
        if high < ssh_low or low > ssh_high:
            return settings.replace(forward_ports=(low, high), account_max_forwarded_ports=4)


def rows(service) -> int:
    with service.db.reading() as s:
        return s.scalar(select(func.count()).select_from(PortForward))


def running(client, launch, wait, **body) -> str:
    instance_id = launch(**body)["instances"][0]["id"]
    wait()
    return instance_id


def test_only_the_forward_range_is_given(client, launch, wait, settings, expect_error):
    """The finding's own request: PostgreSQL's port, or any port outside the range, on add
    as at launch, is a 400 naming the range; the range's ports are accepted."""
    instance_id = running(client, launch, wait)
    low, high = settings.forward_ports
    for port in (5432, 9090, 16509, 8080, low - 1, high + 1):
        message = expect_error(client.post(f"/v1/instances/{instance_id}/ports",
                                           json={"guest_port": 5432, "host_port": port}), 400, "InvalidParameterValue")
        assert f"forward range {low}-{high}" in message, message
    assert client.get(f"/v1/instances/{instance_id}/ports").get_json()["ports"] == []
    port = next(p for p in range(high, low - 1, -1) if port_is_free("127.0.0.1", p))
    added = client.post(f"/v1/instances/{instance_id}/ports", json={"guest_port": 5432, "host_port": port})
    assert added.status_code == 201, added.get_data(as_text=True)


def test_an_admin_widens_the_range_by_its_setting(make_app, settings, free_ports):
    """What an admin changes to let a port through: the forward_ports setting."""
    low, high = settings.forward_ports
    wider = make_app(forward_ports=(low, high + 1))
    port = high + 1
    if not port_is_free("127.0.0.1", port):
        pytest.skip(f"port {port} is taken on this machine now")
    response = wider.test_client().post("/v1/instances", json={
        "size": "t3.micro", "ports": [{"guest_port": 80, "host_port": port}]})
    assert response.status_code == 202, response.get_data(as_text=True)


def test_the_account_limit_counts_every_instance(client, launch, wait, service, expect_error, nothing_launched):
    first = running(client, launch, wait, ports=[{"guest_port": 80}, {"guest_port": 81}])
    second = running(client, launch, wait, ports=[{"guest_port": 80}])
    assert rows(service) == 3
    # a launch past the limit: nothing of it is made
    with service.db.reading() as s:
        before = set(s.scalars(select(Instance.id)))
    message = expect_error(client.post("/v1/instances", json={
        "size": "t3.micro", "ports": [{"guest_port": 80}, {"guest_port": 81}]}), 400, "PortLimitExceeded")
    assert "limit is 4 forwarded ports" in message and "3 in use, 2 more" in message, message
    with service.db.reading() as s:
        assert set(s.scalars(select(Instance.id))) == before
    assert rows(service) == 3
    # an add up to the limit works, one past it does not
    assert client.post(f"/v1/instances/{second}/ports", json={"guest_port": 443}).status_code == 201
    expect_error(client.post(f"/v1/instances/{first}/ports", json={"guest_port": 443}), 400, "PortLimitExceeded")
    assert rows(service) == 4
    # another account has its own limit
    other = service.accounts.create("other")
    auth = (other.access_key_id, other.secret_access_key)
    theirs = client.post("/v1/instances", json={"size": "t3.micro", "ports": [{"guest_port": 80}]}, auth=auth)
    assert theirs.status_code == 202, theirs.get_data(as_text=True)
    # a removed port is room again
    port = client.get(f"/v1/instances/{first}/ports").get_json()["ports"][0]["host_port"]
    assert client.delete(f"/v1/instances/{first}/ports/{port}").status_code == 204
    assert client.post(f"/v1/instances/{first}/ports", json={"guest_port": 8443}).status_code == 201


def test_the_account_limit_holds_under_concurrent_adds(client, launch, wait, service):
    """Eight adds at once on two instances of one account, with room for four: four win."""
    ids = [running(client, launch, wait) for _ in range(2)]
    caller = client.application.config["TEST_CALLER"]
    from computed.compute.ports import PortSpec
    from computed.errors import ComputedError

    def add(i):
        try:
            service.ports.add(caller, ids[i % 2], [PortSpec(1000 + i)])
            return ""
        except ComputedError as e:
            return e.code

    results = at_once(add, 8)
    # a busy instance (its lock held by a concurrent add of the same instance) may answer 409; none passes
    assert results.count("") <= 4 and rows(service) == results.count("")
    assert set(results) <= {"", "PortLimitExceeded", "IncorrectInstanceState"}, results
    while rows(service) < 4:
        assert add(rows(service) + 100) == ""
    assert add(200) == "PortLimitExceeded" and rows(service) == 4


def test_ssh_ports_and_forwarded_ports_never_meet(client, launch, wait, service, settings, expect_error):
    """A port an instance holds as its SSH port (say, from an SSH range an admin has since
    changed) is not forwarded; a forwarded port is not given as an SSH port."""
    low, high = settings.forward_ports
    holder = running(client, launch, wait)
    with service.db.session() as s:
        s.execute(update(Instance).where(Instance.id == holder).values(ssh_port=high))
    inst = running(client, launch, wait)
    message = expect_error(client.post(f"/v1/instances/{inst}/ports", json={"guest_port": 80, "host_port": high}),
                           409, "InvalidPort.InUse")
    assert str(high) in message
    # the SSH range's next free port, forwarded by another instance: the next launch skips it
    ssh_low, ssh_high = settings.ssh_ports
    with service.db.reading() as s:
        held = set(s.scalars(select(Instance.ssh_port)))
    next_ssh = next(p for p in range(ssh_low, ssh_high + 1) if p not in held and port_is_free("127.0.0.1", p))
    with service.db.session() as s:
        s.add(PortForward(instance_id=inst, host_address="127.0.0.1", host_port=next_ssh, guest_port=80))
    third = launch()["instances"][0]
    assert third["ssh"]["port"] != next_ssh


def test_a_remote_hosts_port_is_asked_of_the_host(client, launch, wait, service, settings, monkeypatch,
                                                  expect_error):
    """On a remote host (its URI names a machine) the service cannot bind a port itself: it
    asks the host's address. A port something listens on there is refused when named and
    skipped when picked. (The host's address here is loopback; its locality is faked.)"""
    instance_id = running(client, launch, wait)
    monkeypatch.setattr(computed.compute.ports, "is_local", lambda uri: False)
    low, high = settings.forward_ports
    with socket.socket() as listener:
        port = next(p for p in range(low, high + 1) if port_is_free("127.0.0.1", p))
        listener.bind(("127.0.0.1", port))
        listener.listen()
        message = expect_error(client.post(f"/v1/instances/{instance_id}/ports",
                                           json={"guest_port": 80, "host_port": port}), 409, "InvalidPort.InUse")
        assert "in use by another program" in message and "host local" in message, message
        picked = client.post(f"/v1/instances/{instance_id}/ports", json={"guest_port": 81})
        assert picked.status_code == 201, picked.get_data(as_text=True)
        assert picked.get_json()["host_port"] != port
    assert rows(service) == 1


def test_the_probes(free_ports):
    port = free_ports(1)[0]
    assert nothing_listens("127.0.0.1", port) and port_is_free_on("127.0.0.1", port, local=False)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        assert not port_is_free_on("127.0.0.1", port, local=True)  # bound is taken here
        listener.listen()
        assert not nothing_listens("127.0.0.1", port) and not port_is_free_on("127.0.0.1", port, local=False)


def test_a_remote_hosts_ssh_port_is_asked_of_the_host(client, service, settings, monkeypatch):
    """The same for the SSH port a launch picks on a remote host."""
    monkeypatch.setattr(computed.compute.ssh_ports, "is_local", lambda uri: False)
    low, _ = settings.ssh_ports
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", low))
        listener.listen()
        response = client.post("/v1/instances", json={"size": "t3.micro"})
        assert response.status_code == 202, response.get_data(as_text=True)
        assert response.get_json()["instances"][0]["ssh"]["port"] != low


def test_a_picked_port_qemu_refuses_is_replaced_by_the_next(client, launch, wait, service, settings, monkeypatch,
                                                            expect_error):
    """QEMU's bind on the host is the last word (a remote host's bound socket, which no probe
    from here sees): a port the service picked itself and QEMU refuses is given up for the
    next one; one the user named is a 409. Nothing of a refused change stays. (QEMU is a
    fake here: the test driver has no monitor; the VM test has the real one.)"""
    from computed.virt.driver import Capabilities
    driver = type(service.default_driver)
    # the test driver drops QEMU's command line from what it keeps: the definitions as defined
    definitions, define = {}, driver.define

    def keep(self, xml):
        name = xml.split("<name>", 1)[1].split("</name>", 1)[0]
        if name not in definitions:  # a redefinition stays the fake's (it has no uuid to match)
            define(self, xml)
        definitions[name] = xml
    monkeypatch.setattr(driver, "define", keep)
    monkeypatch.setattr(driver, "definition", lambda self, name: definitions.get(name))
    instance_id = running(client, launch, wait)
    monkeypatch.setattr(service.provisioner, "capabilities", lambda inst: Capabilities(False, True))
    low, high = settings.forward_ports
    squatted = next(p for p in range(low, high + 1) if port_is_free("127.0.0.1", p))
    sent = []

    def monitor(self, name, command):
        sent.append(command)
        if command.startswith("hostfwd_add") and f":{squatted}-" in command:
            return "Could not set up host forwarding rule"
        return ""
    monkeypatch.setattr(driver, "monitor", monitor)
    picked = client.post(f"/v1/instances/{instance_id}/ports", json={"guest_port": 80})
    assert picked.status_code == 201, picked.get_data(as_text=True)
    assert picked.get_json()["host_port"] not in (squatted, None)
    assert any(f":{squatted}-" in c for c in sent)
    message = expect_error(client.post(f"/v1/instances/{instance_id}/ports",
                                       json={"guest_port": 81, "host_port": squatted}), 409, "InvalidPort.InUse")
    assert "QEMU refused" in message
    assert [p["guest_port"] for p in client.get(f"/v1/instances/{instance_id}/ports").get_json()["ports"]] == [80]
    definition = service.default_driver.definition(f"computed-{instance_id}")
    assert f":{squatted}-" not in definition and f":{picked.get_json()['host_port']}-:80" in definition


def test_a_launch_of_many_counts_every_instances_ports(client, service, expect_error, nothing_launched):
    """count 3 with 2 ports each is 6 ports: past a limit of 4, nothing of it is made."""
    message = expect_error(client.post("/v1/instances", json={
        "size": "t3.micro", "count": 3, "ports": [{"guest_port": 80}, {"guest_port": 81}]}), 400, "PortLimitExceeded")
    assert "limit is 4" in message
    nothing_launched()
    assert rows(service) == 0
    response = client.post("/v1/instances", json={"size": "t3.micro", "count": 2,
                                                  "ports": [{"guest_port": 80}, {"guest_port": 81}]})
    assert response.status_code == 202, response.get_data(as_text=True)
    assert rows(service) == 4
