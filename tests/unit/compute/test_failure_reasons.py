"""Issue 17, finding 9: a tenant sees neither its host's libvirt URI (which can name a user
and key files on the service's machine) nor a failure's raw words (libvirt's and
qemu-img's, with the host's paths) in its instance's state reason: it sees the host's name
and a generic reason with an error id. An admin sees the detail, which the log has too,
with the same id. Reasons the service writes itself (the user's stop) stay as they are.
(EC2's DescribeInstances: tests/unit/api/ec2/test_ec2_failure_reasons.py.)"""

from __future__ import annotations

import json
import logging
import re

import libvirt

from computed.virt.errors import LaunchError

SECRET_PATH = "/var/lib/computed/instances/i-0/disk.qcow2"
QEMU_IMG = (f"creating the instance's disk failed: qemu-img: {SECRET_PATH}: Could not open backing file: "
            "Permission denied")
ERROR_ID = re.compile(r"e-[0-9a-f]{8}")


def failed_launch(client, service, monkeypatch, error: Exception) -> str:
    def fail(inst, undo):
        raise error
    monkeypatch.setattr(service.provisioner, "create", fail)
    response = client.post("/v1/instances", json={"size": "t3.micro"})
    assert response.status_code == 202, response.get_data(as_text=True)
    service.worker.idle(60)
    monkeypatch.undo()
    return response.get_json()["instances"][0]["id"]


def test_a_failed_launch_shows_a_tenant_an_error_id_and_an_admin_the_detail(client, service, monkeypatch, caplog,
                                                                              settings):
    caplog.set_level(logging.WARNING)
    instance_id = failed_launch(client, service, monkeypatch, LaunchError(QEMU_IMG))
    tenant = client.get(f"/v1/instances/{instance_id}").get_json()
    assert tenant["state"]["name"] == "terminated"
    reason = tenant["state_reason"]
    assert reason["code"] == "Server.InternalError" and set(reason) == {"code", "message"}, reason
    assert re.fullmatch(r"the launch failed \(error id e-[0-9a-f]{8}\)", reason["message"]), reason
    error_id = ERROR_ID.search(reason["message"])[0]
    listed = client.get("/v1/instances").get_json()
    for shown in (tenant, listed):
        text = json.dumps(shown)
        assert SECRET_PATH not in text and "qemu-img" not in text and settings.libvirt_uri not in text, text
    assert tenant["host"] == "local" == tenant["placement"]["host"]

    boss = service.accounts.create("boss", admin=True)
    admin = client.get(f"/v1/instances/{instance_id}", auth=(boss.access_key_id, boss.secret_access_key)).get_json()
    assert admin["state_reason"] == {"code": "Server.InternalError", "message": reason["message"], "detail": QEMU_IMG}
    assert admin["host"] == settings.libvirt_uri
    # the log has the detail under the same id
    logged = [r.getMessage() for r in caplog.records if error_id in r.getMessage()]
    assert logged and SECRET_PATH in logged[0], logged


def test_a_libvirt_error_is_hidden_too(client, service, monkeypatch):
    error = libvirt.libvirtError("internal error: process exited while connecting to monitor: "
                                 "qemu-system-x86_64: -drive file=/srv/computed/i-1/disk.qcow2: Permission denied")
    instance_id = failed_launch(client, service, monkeypatch, error)
    reason = client.get(f"/v1/instances/{instance_id}").get_json()["state_reason"]
    assert ERROR_ID.search(reason["message"]) and "/srv/computed" not in reason["message"], reason


def test_a_failed_start_is_hidden_and_the_services_own_reasons_stay(client, launch, service, wait, monkeypatch):
    instance_id = launch()["instances"][0]["id"]
    wait()
    assert client.post(f"/v1/instances/{instance_id}/stop").status_code == 202
    wait()
    stopped = client.get(f"/v1/instances/{instance_id}").get_json()["state_reason"]
    assert stopped == {"code": "Client.UserInitiatedShutdown", "message": "User initiated shutdown"}

    def fail(inst):
        raise libvirt.libvirtError(f"Cannot access storage file '{SECRET_PATH}': No such file or directory")
    monkeypatch.setattr(service.provisioner, "start", fail)
    assert client.post(f"/v1/instances/{instance_id}/start").status_code == 202
    wait()
    reason = client.get(f"/v1/instances/{instance_id}").get_json()["state_reason"]
    assert re.fullmatch(r"the start failed \(error id e-[0-9a-f]{8}\)", reason["message"]), reason


def test_an_unreachable_host_is_named_not_its_uri(client, launch, service, wait, monkeypatch, expect_error):
    """A tenant's action on an instance whose host does not answer is a 503 naming the host;
    libvirt's words (with the URI, its user and key file) are the admin's (/v1/hosts)."""
    from computed.errors import ServiceUnavailable
    instance_id = launch()["instances"][0]["id"]
    wait()
    uri = "qemu+ssh://root@node-2/system?keyfile=/root/.ssh/computed_host"

    def down(self):
        raise ServiceUnavailable(f"the libvirt host {uri} cannot be reached: Connection refused")
    monkeypatch.setattr(type(service.default_driver), "capacity", down)
    for response in (client.post(f"/v1/instances/{instance_id}/stop"),
                     client.post(f"/v1/instances/{instance_id}/ports", json={"guest_port": 80}),
                     client.post("/v1/instances", json={"size": "t3.micro"})):
        message = expect_error(response, 503, {"ServiceUnavailable", "InsufficientInstanceCapacity"})
        assert "local" in message and uri not in message and "keyfile" not in message, message
    boss = service.accounts.create("boss", admin=True)
    host = client.get("/v1/hosts/local", auth=(boss.access_key_id, boss.secret_access_key)).get_json()
    assert uri in json.dumps(host)
