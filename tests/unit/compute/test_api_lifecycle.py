"""The instance state machine through the API, on libvirt's test driver: stop, start,
reboot, terminate (and what termination frees), purging terminated instances, and the
console endpoint."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import func, select

from computed.store.models import Tag

USER_SHUTDOWN = "Client.UserInitiatedShutdown"


@pytest.fixture
def running(client, launch, wait):
    """running(**body) -> the id of a launched instance, once it is running."""

    def make(**body):
        instance_id = launch(**body)["instances"][0]["id"]
        wait()
        assert state(client, instance_id) == "running"
        return instance_id

    return make


@pytest.fixture
def gate(service, monkeypatch):
    """Hold launches in the worker (the instance stays pending) until gate.set()."""
    event = threading.Event()
    create = service.provisioner.create

    def held_create(inst, undo):
        assert event.wait(10), "the test never opened the gate"
        create(inst, undo)

    monkeypatch.setattr(service.provisioner, "create", held_create)
    yield event
    event.set()


def get(client, instance_id) -> dict:
    response = client.get(f"/v1/instances/{instance_id}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def state(client, instance_id) -> str:
    return get(client, instance_id)["state"]["name"]


def act(client, instance_id, action) -> dict:
    response = client.post(f"/v1/instances/{instance_id}/{action}")
    assert response.status_code == 202, response.get_json()
    return response.get_json()


# -- stop and start ------------------------------------------------------------------------

def test_stop_then_start(client, running, wait, our_domains):
    instance_id = running()
    domain = f"computed-{instance_id}"
    launched = get(client, instance_id)

    stopping = act(client, instance_id, "stop")
    assert stopping["state"] == {"name": "stopping", "code": 64}
    assert stopping["state_reason"]["code"] == USER_SHUTDOWN
    wait()
    stopped = get(client, instance_id)
    assert stopped["state"] == {"name": "stopped", "code": 80}
    assert stopped["state_reason"] == {"code": USER_SHUTDOWN, "message": "User initiated shutdown"}
    assert stopped["state_changed_at"] > launched["state_changed_at"]
    assert stopped["ssh"]["port"] == launched["ssh"]["port"]  # a stopped instance keeps its port
    assert our_domains() == {domain: "shutoff"}  # still defined

    # stopping a stopped instance is no error and changes nothing
    assert act(client, instance_id, "stop")["state"]["name"] == "stopped"

    pending = act(client, instance_id, "start")
    assert pending["state"] == {"name": "pending", "code": 0}
    assert pending["state_reason"] is None
    wait()
    assert get(client, instance_id)["state"] == {"name": "running", "code": 16}
    assert our_domains() == {domain: "running"}
    assert get(client, instance_id)["launch_time"] == launched["launch_time"]

    # starting a running instance is no error either
    assert act(client, instance_id, "start")["state"]["name"] == "running"


def test_stop_pulls_the_plug_when_the_guest_ignores_acpi(make_app, wait, our_domains, monkeypatch):
    from computed.virt.libvirt.connection import LibvirtDriver
    app = make_app(stop_timeout=1)
    client, svc = app.test_client(), app.extensions["computed"]
    instance_id = client.post("/v1/instances", json={"size": "t3.micro"}).get_json()["instances"][0]["id"]
    wait(svc)
    monkeypatch.setattr(LibvirtDriver, "shutdown", lambda self, name: None)  # the guest does not react
    act(client, instance_id, "stop")
    wait(svc)
    assert state(client, instance_id) == "stopped"
    assert our_domains(svc) == {f"computed-{instance_id}": "shutoff"}


def test_stop_and_start_twice(client, running, wait):
    instance_id = running()
    for _ in range(2):
        act(client, instance_id, "stop")
        wait()
        assert state(client, instance_id) == "stopped"
        act(client, instance_id, "start")
        wait()
        assert state(client, instance_id) == "running"


# -- reboot --------------------------------------------------------------------------------

def test_reboot_running(client, running, wait, our_domains):
    instance_id = running()
    rebooting = act(client, instance_id, "reboot")
    assert rebooting["state"]["name"] == "running"
    assert rebooting["ready"] == {"ssh": False, "container_engine": False}
    wait()
    assert state(client, instance_id) == "running"
    assert our_domains() == {f"computed-{instance_id}": "running"}


def test_reboot_answer_shows_readiness_reset(client, running, wait, service):
    from computed.store.models import Instance
    instance_id = running()
    with service.db.session() as s:  # as if the readiness checks had passed
        inst = s.get(Instance, instance_id)
        inst.ready_ssh = inst.ready_engine = True
    assert get(client, instance_id)["ready"] == {"ssh": True, "container_engine": True}
    answer = act(client, instance_id, "reboot")
    wait()
    assert get(client, instance_id)["ready"] == {"ssh": False, "container_engine": False}  # the store is right
    assert answer["ready"] == {"ssh": False, "container_engine": False}


def test_reboot_stopped_is_refused(client, running, wait, expect_error):
    instance_id = running()
    act(client, instance_id, "stop")
    wait()
    message = expect_error(client.post(f"/v1/instances/{instance_id}/reboot"), 409, "IncorrectInstanceState")
    assert "stopped" in message
    assert state(client, instance_id) == "stopped"


# -- pending -------------------------------------------------------------------------------

def test_pending_instance(client, launch, wait, gate, expect_error, our_domains, settings):
    instance_id = launch()["instances"][0]["id"]
    assert state(client, instance_id) == "pending"
    expect_error(client.post(f"/v1/instances/{instance_id}/stop"), 409, "IncorrectInstanceState")
    expect_error(client.post(f"/v1/instances/{instance_id}/reboot"), 409, "IncorrectInstanceState")
    assert act(client, instance_id, "start")["state"]["name"] == "pending"  # already on its way

    terminating = client.delete(f"/v1/instances/{instance_id}")
    assert terminating.status_code == 202
    assert terminating.get_json()["state"] == {"name": "shutting-down", "code": 32}
    gate.set()
    wait()
    gone = get(client, instance_id)
    assert gone["state"] == {"name": "terminated", "code": 48}
    assert gone["state_reason"]["code"] == USER_SHUTDOWN
    assert our_domains() == {}
    assert not (settings.instances_dir / instance_id).exists()


# -- terminate -----------------------------------------------------------------------------

@pytest.mark.parametrize("before", ["running", "stopped"])
def test_terminate(client, running, wait, our_domains, settings, expect_error, before):
    instance_id = running(tags={"a": "b"})
    port = get(client, instance_id)["ssh"]["port"]
    if before == "stopped":
        act(client, instance_id, "stop")
        wait()
        assert state(client, instance_id) == "stopped"
    assert (settings.instances_dir / instance_id).is_dir()

    response = client.delete(f"/v1/instances/{instance_id}")
    assert response.status_code == 202
    assert response.get_json()["state"] == {"name": "shutting-down", "code": 32}
    assert response.get_json()["state_reason"]["code"] == USER_SHUTDOWN
    wait()

    gone = get(client, instance_id)
    assert gone["state"] == {"name": "terminated", "code": 48}
    assert gone["state_reason"] == {"code": USER_SHUTDOWN, "message": "User initiated shutdown"}
    assert gone["ssh"] == {"host": None, "port": None, "user": "debian", "command": None, "host_key": None,
                           "host_key_fingerprints": [], "known_hosts": None}
    assert gone["tags"] == {"a": "b"}
    assert gone["ready"] == {"ssh": False, "container_engine": False}
    assert our_domains() == {}  # destroyed and undefined
    assert not (settings.instances_dir / instance_id).exists()
    assert port not in [i["ssh"]["port"] for i in client.get("/v1/instances").get_json()["instances"]]

    # terminating again is a no-op; nothing else works any more
    again = client.delete(f"/v1/instances/{instance_id}")
    assert again.status_code == 202
    assert again.get_json()["state"]["name"] == "terminated"
    assert again.get_json()["state_changed_at"] == gone["state_changed_at"]
    for action in ("stop", "start", "reboot"):
        expect_error(client.post(f"/v1/instances/{instance_id}/{action}"), 409, "IncorrectInstanceState")
    assert get(client, instance_id) == gone


def test_a_failed_termination_can_be_retried(client, running, wait, our_domains, monkeypatch):
    import libvirt

    from computed.virt.libvirt.connection import LibvirtDriver
    instance_id = running()
    destroy, failures = LibvirtDriver.power_off, []

    def fails_once(self, name):
        if not failures:
            failures.append(name)
            raise libvirt.libvirtError("the host hiccuped")
        destroy(self, name)

    monkeypatch.setattr(LibvirtDriver, "power_off", fails_once)
    client.delete(f"/v1/instances/{instance_id}")
    wait()
    assert failures
    client.delete(f"/v1/instances/{instance_id}")  # the user tries again
    wait()
    assert state(client, instance_id) == "terminated"
    assert our_domains() == {}


def test_terminating_frees_the_ssh_port(make_app, wait, expect_error, free_ports):
    port, _ = free_ports(1)
    app = make_app(ssh_ports=(port, port))  # room for one instance
    client, svc = app.test_client(), app.extensions["computed"]
    first = client.post("/v1/instances", json={"size": "t3.micro"}).get_json()["instances"][0]
    assert first["ssh"]["port"] == port
    expect_error(client.post("/v1/instances", json={"size": "t3.micro"}), 503, "InsufficientInstanceCapacity")
    wait(svc)
    assert client.delete(f"/v1/instances/{first['id']}").status_code == 202
    wait(svc)
    second = client.post("/v1/instances", json={"size": "t3.micro"})
    assert second.status_code == 202
    assert second.get_json()["instances"][0]["ssh"]["port"] == port
    wait(svc)
    assert state(client, second.get_json()["instances"][0]["id"]) == "running"


def test_terminate_one_of_a_reservation(client, launch, wait, our_domains):
    instances = launch(count=3)["instances"]
    wait()
    client.delete(f"/v1/instances/{instances[1]['id']}")
    wait()
    assert [state(client, i["id"]) for i in instances] == ["running", "terminated", "running"]
    assert set(our_domains()) == {f"computed-{instances[0]['id']}", f"computed-{instances[2]['id']}"}


# -- purge ---------------------------------------------------------------------------------

def test_terminated_instances_are_purged_after_the_retention(make_app, wait, expect_error, monkeypatch):
    app = make_app(terminated_retention=1)
    client, svc = app.test_client(), app.extensions["computed"]
    kept = client.post("/v1/instances", json={"size": "t3.micro"}).get_json()["instances"][0]["id"]
    doomed = client.post("/v1/instances", json={"size": "t3.micro", "tags": {"x": "y"}}).get_json()
    doomed = doomed["instances"][0]["id"]
    wait(svc)
    client.delete(f"/v1/instances/{doomed}")
    wait(svc)
    assert state(client, doomed) == "terminated"  # still visible within the retention

    later = svc.clock.now() + dt.timedelta(seconds=2)
    monkeypatch.setattr(svc.instances.clock, "now", lambda: later)
    expect_error(client.get(f"/v1/instances/{doomed}"), 404, "InvalidInstanceID.NotFound")
    assert [i["id"] for i in client.get("/v1/instances").get_json()["instances"]] == [kept]
    assert state(client, kept) == "running"  # only terminated instances go
    assert svc.instances.purge() == 1  # the periodic purge deletes the row; reads never write
    with svc.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Tag)) == 0  # their tags went with them
    expect_error(client.delete(f"/v1/instances/{doomed}"), 404, "InvalidInstanceID.NotFound")


def test_purge_keeps_recently_terminated(client, running, wait):
    instance_id = running()
    client.delete(f"/v1/instances/{instance_id}")
    wait()
    assert client.application.extensions["computed"].instances.purge() == 0
    assert state(client, instance_id) == "terminated"


# -- console -------------------------------------------------------------------------------

def test_console(client, running, settings, expect_error):
    instance_id = running()
    console = settings.instances_dir / instance_id / "console.log"
    assert console.read_bytes() == b""
    body = client.get(f"/v1/instances/{instance_id}/console").get_json()
    assert body["instance_id"] == instance_id and body["output"] == ""
    assert body["timestamp"].endswith("+00:00")

    console.write_bytes(b"[    0.000000] Linux version 6.1.0\r\ndebian login: \xff\xfe")
    body = client.get(f"/v1/instances/{instance_id}/console").get_json()
    assert body["output"] == "[    0.000000] Linux version 6.1.0\r\ndebian login: \ufffd\ufffd"


def test_console_is_the_last_64_kib(client, running, settings):
    instance_id = running()
    console = settings.instances_dir / instance_id / "console.log"
    console.write_text("old\n" * 1000 + "x" * (64 * 1024 - 4) + "end\n")
    output = client.get(f"/v1/instances/{instance_id}/console").get_json()["output"]
    assert len(output) == 64 * 1024
    assert output.endswith("end\n") and "old" not in output


def test_console_of_a_terminated_instance_is_empty(client, running, wait, settings):
    instance_id = running()
    (settings.instances_dir / instance_id / "console.log").write_text("bye\n")
    client.delete(f"/v1/instances/{instance_id}")
    wait()
    assert client.get(f"/v1/instances/{instance_id}/console").get_json()["output"] == ""
