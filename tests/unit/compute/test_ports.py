"""Forwarded guest ports through the REST API, on libvirt's test driver: asked for at launch
and later, listed with the instance and under /ports, kept through stop and start,
released at terminate; conflicts, privileged ports and every other bad request get a 4xx
with a code and a message and leave nothing behind. (What QEMU does with them is the VM
test's and test_port_definition's.)"""

from __future__ import annotations

import socket

import pytest
from sqlalchemy import func, select

from computed.store.models import Instance, PortForward
from computed.compute.ports import MAX_PORTS
from computed.hosts.addresses import port_is_free


@pytest.fixture
def settings(settings, free_ports):
    """A forward range of 20 free ports apart from the SSH range (the service forwards no
    port of that range: a forward range inside it would have none to give)."""
    ssh_low, ssh_high = settings.ssh_ports
    while True:
        low, high = free_ports(20)
        if high < ssh_low or low > ssh_high:
            return settings.replace(forward_ports=(low, high))


@pytest.fixture
def running(client, launch, wait):
    def make(**body):
        instance_id = launch(**body)["instances"][0]["id"]
        wait()
        assert client.get(f"/v1/instances/{instance_id}").get_json()["state"]["name"] == "running"
        return instance_id
    return make


@pytest.fixture
def defined(service, monkeypatch):
    """The domain XML each launch defined, by domain name."""
    seen = {}
    define = type(service.default_driver).define

    def spy(host, xml):
        name = xml.split("<name>", 1)[1].split("</name>", 1)[0]
        seen[name] = xml
        define(host, xml)
    monkeypatch.setattr(type(service.default_driver), "define", spy)
    return seen


@pytest.fixture
def free_port(settings):
    """A port of the forward range free now, from its top down (a port the service picks
    itself comes from the bottom up)."""
    low, high = settings.forward_ports
    given = set()

    def one() -> int:
        port = next(p for p in range(high, low - 1, -1) if p not in given and port_is_free("127.0.0.1", p))
        given.add(port)
        return port
    return one


def ports_of(client, instance_id):
    response = client.get(f"/v1/instances/{instance_id}/ports")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["ports"]


def rows(service):
    with service.db.reading() as s:
        return s.scalar(select(func.count()).select_from(PortForward))


def test_launch_with_ports(client, launch, wait, settings, free_port, defined):
    chosen = free_port()
    body = launch(ports=[{"guest_port": 80, "host_port": chosen}, {"guest_port": 5432}])
    [inst] = body["instances"]
    low, high = settings.forward_ports
    by_guest = {p["guest_port"]: p for p in inst["ports"]}
    assert by_guest[80] == {"host": "127.0.0.1", "host_port": chosen, "guest_port": 80, "protocol": "tcp",
                            "address": f"127.0.0.1:{chosen}"}
    assert low <= by_guest[5432]["host_port"] <= high
    assert ports_of(client, inst["id"]) == sorted(inst["ports"], key=lambda p: p["host_port"])
    wait()
    # the domain's user-mode network forwards SSH and both (QEMU's own command line)
    xml = defined[f"computed-{inst['id']}"]
    assert f"hostfwd=tcp:127.0.0.1:{inst['ssh']['port']}-:22" in xml
    assert f"hostfwd=tcp:127.0.0.1:{chosen}-:80" in xml
    assert f"hostfwd=tcp:127.0.0.1:{by_guest[5432]['host_port']}-:5432" in xml


def test_count_gets_a_port_each(launch, settings):
    body = launch(count=3, ports=[{"guest_port": 80}])
    ports = [p["host_port"] for i in body["instances"] for p in i["ports"]]
    assert len(ports) == 3 and len(set(ports)) == 3
    low, high = settings.forward_ports
    assert all(low <= p <= high for p in ports)


def test_a_port_of_another_instance_is_refused_leaving_nothing(client, launch, free_port, expect_error, service,
                                                               nothing_launched):
    chosen = free_port()
    first = launch(ports=[{"guest_port": 80, "host_port": chosen}])["instances"][0]
    before = rows(service)
    message = expect_error(client.post("/v1/instances", json={
        "size": "t3.micro", "ports": [{"guest_port": 81, "host_port": chosen}]}), 409, "InvalidPort.InUse")
    assert str(chosen) in message
    with service.db.reading() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 1
    assert rows(service) == before
    # once the first is terminated, the port is free for another
    assert client.delete(f"/v1/instances/{first['id']}").status_code == 202
    service.worker.idle(60)
    assert ports_of(client, first["id"]) == []
    assert client.get(f"/v1/instances/{first['id']}").get_json()["ports"] == []
    assert rows(service) == 0
    second = client.post("/v1/instances", json={"size": "t3.micro", "ports": [{"guest_port": 81, "host_port": chosen}]})
    assert second.status_code == 202, second.get_data(as_text=True)


def test_a_port_another_program_listens_on_is_refused(client, free_port, expect_error, nothing_launched):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", free_port()))
        listener.listen()
        port = listener.getsockname()[1]
        message = expect_error(client.post("/v1/instances", json={
            "size": "t3.micro", "ports": [{"guest_port": 80, "host_port": port}]}), 409, "InvalidPort.InUse")
    assert "another program" in message
    nothing_launched()


BAD_PORTS = {
    "privileged host port": ([{"guest_port": 80, "host_port": 80}], "privileged"),
    "host port 1023": ([{"guest_port": 80, "host_port": 1023}], "privileged"),
    "host port 0": ([{"guest_port": 80, "host_port": 0}], None),
    "host port too high": ([{"guest_port": 80, "host_port": 65536}], None),
    "guest port 0": ([{"guest_port": 0}], None),
    "guest port too high": ([{"guest_port": 70000}], None),
    "no guest port": ([{"host_port": 8080}], None),
    "guest port as text": ([{"guest_port": "80"}], None),
    "guest port as float": ([{"guest_port": 80.0}], None),
    "guest port true": ([{"guest_port": True}], None),
    "udp": ([{"guest_port": 53, "protocol": "udp"}], "tcp"),
    "a guest port twice": ([{"guest_port": 80}, {"guest_port": 80}], "twice"),
    "too many": ([{"guest_port": p} for p in range(1, MAX_PORTS + 2)], None),
    "not a list": ({"guest_port": 80}, None),
    "a string": (["8080:80"], None),
    "unknown field": ([{"guest_port": 80, "bind": "0.0.0.0"}], None),
}


def test_bad_ports_at_launch(client, settings, expect_error, case, nothing_launched):
    low, _ = settings.ssh_ports
    forward_low, forward_high = settings.forward_ports
    outside = f"outside the service's forward range {forward_low}-{forward_high}"
    cases = dict(BAD_PORTS) | {
        "SSH range": ([{"guest_port": 80, "host_port": low}], "SSH"),
        "a host port twice": ([{"guest_port": 80, "host_port": forward_high},
                               {"guest_port": 81, "host_port": forward_high}], "twice"),
        # another service's port on the host: PostgreSQL, the metrics' Prometheus, libvirt's TCP, the API
        **{f"host port {port}": ([{"guest_port": 80, "host_port": port}], outside)
           for port in (5432, 9090, 16509, settings.api_port, forward_low - 1, forward_high + 1)},
    }
    for label, (ports, words) in cases.items():
        with case(label):
            message = expect_error(client.post("/v1/instances", json={"size": "t3.micro", "ports": ports}), 400)
            if words:
                assert words in message, message
    with case("a host port with count 2"):
        message = expect_error(client.post("/v1/instances", json={
            "size": "t3.micro", "count": 2, "ports": [{"guest_port": 80, "host_port": 18080}]}), 400,
            "InvalidParameterValue")
        assert "one instance" in message
    nothing_launched()


def test_add_and_remove_on_a_running_instance(client, running, service, free_port, expect_error):
    instance_id = running()
    chosen = free_port()
    response = client.post(f"/v1/instances/{instance_id}/ports", json={"guest_port": 8080, "host_port": chosen})
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json() == {"host": "127.0.0.1", "host_port": chosen, "guest_port": 8080, "protocol": "tcp",
                                   "address": f"127.0.0.1:{chosen}"}
    auto = client.post(f"/v1/instances/{instance_id}/ports", json={"guest_port": 9090}).get_json()
    assert [p["host_port"] for p in ports_of(client, instance_id)] == sorted([chosen, auto["host_port"]])
    shown = client.get(f"/v1/instances/{instance_id}").get_json()["ports"]
    assert {p["guest_port"] for p in shown} == {8080, 9090}

    with_ = f"/v1/instances/{instance_id}/ports"
    assert "this instance" in expect_error(client.post(with_, json={"guest_port": 8081, "host_port": chosen}), 409,
                                           "InvalidPort.InUse")
    assert "already forwarded" in expect_error(client.post(with_, json={"guest_port": 8080}), 409, "InvalidPort.InUse")
    expect_error(client.post(with_, json={"guest_port": 80, "host_port": 443}), 400, "InvalidParameterValue")
    expect_error(client.post(with_, json={}), 400)
    expect_error(client.post(with_, data="8080:80", content_type="text/plain"), 415)

    assert client.delete(f"{with_}/{chosen}").status_code == 204
    assert [p["guest_port"] for p in ports_of(client, instance_id)] == [9090]
    expect_error(client.delete(f"{with_}/{chosen}"), 404, "InvalidPort.NotFound")
    assert rows(service) == 1
    # the port freed is anyone's again
    again = client.post(with_, json={"guest_port": 8081, "host_port": chosen})
    assert again.status_code == 201, again.get_data(as_text=True)


def test_ports_stay_through_stop_and_start(client, running, wait):
    instance_id = running(ports=[{"guest_port": 80}])
    before = ports_of(client, instance_id)
    assert client.post(f"/v1/instances/{instance_id}/stop").status_code == 202
    wait()
    # a stopped instance's ports change too (its next start has them)
    added = client.post(f"/v1/instances/{instance_id}/ports", json={"guest_port": 443})
    assert added.status_code == 201, added.get_data(as_text=True)
    assert client.post(f"/v1/instances/{instance_id}/start").status_code == 202
    wait()
    after = ports_of(client, instance_id)
    assert before[0] in after and {p["guest_port"] for p in after} == {80, 443}


def test_ports_of_an_instance_in_transition_or_gone(client, launch, service, expect_error, monkeypatch):
    import threading
    gate = threading.Event()
    create = service.provisioner.create
    monkeypatch.setattr(service.provisioner, "create", lambda inst, undo: (gate.wait(10), create(inst, undo)))
    instance_id = launch()["instances"][0]["id"]
    message = expect_error(client.post(f"/v1/instances/{instance_id}/ports", json={"guest_port": 80}), 409,
                           "IncorrectInstanceState")
    assert "pending" in message
    gate.set()
    service.worker.idle(60)
    assert client.delete(f"/v1/instances/{instance_id}").status_code == 202
    service.worker.idle(60)
    expect_error(client.post(f"/v1/instances/{instance_id}/ports", json={"guest_port": 80}), 409,
                 "IncorrectInstanceState")
    assert rows(service) == 0


def test_other_accounts_and_bad_ids(client, running, service, expect_error):
    instance_id = running(ports=[{"guest_port": 80}])
    port = ports_of(client, instance_id)[0]["host_port"]
    other = service.accounts.create("someone-else")
    auth = (other.access_key_id, other.secret_access_key)
    for method, path, body in (("get", "ports", None), ("post", "ports", {"guest_port": 81}),
                               ("delete", f"ports/{port}", None)):
        expect_error(getattr(client, method)(f"/v1/instances/{instance_id}/{path}", json=body, auth=auth), 404,
                     "InvalidInstanceID.NotFound")
    expect_error(client.get("/v1/instances/i-nope/ports"), 400, "InvalidInstanceID.Malformed")
    assert client.delete(f"/v1/instances/{instance_id}/ports/notaport").status_code == 404
    assert len(ports_of(client, instance_id)) == 1


def test_the_same_client_token_with_other_ports_is_another_request(client, launch, expect_error):
    body = {"size": "t3.micro", "client_token": "with-ports", "ports": [{"guest_port": 80}]}
    first = launch(**body)
    again = launch(**body)
    assert [i["id"] for i in again["instances"]] == [i["id"] for i in first["instances"]]
    expect_error(client.post("/v1/instances", json=body | {"ports": [{"guest_port": 81}]}), 400,
                 "IdempotentParameterMismatch")


def test_a_failed_launch_releases_its_ports(client, launch, service, free_port, monkeypatch):
    from computed.virt.errors import LaunchError

    def fail(inst, undo):
        raise LaunchError("the disk could not be made", "Server.InternalError")
    monkeypatch.setattr(service.provisioner, "create", fail)
    chosen = free_port()
    instance_id = launch(ports=[{"guest_port": 80, "host_port": chosen}])["instances"][0]["id"]
    service.worker.idle(60)
    shown = client.get(f"/v1/instances/{instance_id}").get_json()
    assert shown["state"]["name"] == "terminated" and shown["ports"] == []
    assert rows(service) == 0
    monkeypatch.undo()
    again = client.post("/v1/instances", json={"size": "t3.micro", "ports": [{"guest_port": 80, "host_port": chosen}]})
    assert again.status_code == 202, again.get_data(as_text=True)
