"""Through the REST API, on libvirtd and QEMU: launch the default image, wait until it is
ready, SSH in with the user's key, run the preloaded container, stop, start, reboot,
terminate, and check that nothing of the instance is left: the first of two launched at
once (the second is checked and terminated while the first goes on). Then a launch that
cannot boot."""

from __future__ import annotations

import datetime as dt
import shlex
import shutil
import socket
import subprocess
import time

import paramiko
import pytest

import computed.compute.ports

from computed.virt import ssh
from computed.hosts.addresses import port_is_free
from images.library import ImageLibrary

from .service_harness import RunningService, domain_names, http_get

USER_DATA = "#cloud-config\nwrite_files:\n  - path: /var/tmp/from-user-data\n    content: \"via the API\\n\"\n"


@pytest.fixture(scope="module")
def svc(built_image, settings, qemu_tmp):
    built_image(settings.default_image)
    # reconciliation only hourly: a guest that powers itself off must be seen by libvirt's event
    running = RunningService(qemu_tmp("service-"), settings.image_library, (43100, 43199), reconcile_interval=3600)
    yield running
    running.close()


@pytest.fixture(scope="module")
def keypair(svc):
    created = svc.call("POST", "/v1/keypairs", json={"name": "vm-test"}, expect=201)
    return paramiko.Ed25519Key.from_private_key(__import__("io").StringIO(created["private_key"]))


def login(inst: dict, key) -> paramiko.SSHClient:
    return ssh.wait_for_login(inst["ssh"]["host"], inst["ssh"]["port"], inst["ssh"]["user"], key,
                              time.monotonic() + 120)


def run(client: paramiko.SSHClient, command: str) -> str:
    rc, out, err = ssh.run(client, command, timeout=300)
    assert rc == 0, f"{command!r}: exit {rc}: {err or out}"
    return out


def assert_nothing_left(svc: RunningService, inst: dict) -> None:
    assert f"computed-{inst['id']}" not in domain_names()
    assert not (svc.settings.instances_dir / inst["id"]).exists()
    assert port_is_free("127.0.0.1", inst["ssh"]["port"])
    final = svc.instance(inst["id"])
    assert final["state"] == {"name": "terminated", "code": 48}
    assert final["ssh"]["port"] is None
    assert final["ports"] == []
    for port in inst.get("ports") or ():
        assert port_is_free(port["host"], port["host_port"])


def serve_in_container(client: paramiko.SSHClient, name: str, port: int, text: str) -> None:
    """A container in the guest answering HTTP on guest PORT with TEXT (busybox httpd)."""
    script = f"mkdir -p /www && echo {shlex.quote(text)} > /www/index.html && exec httpd -f -p 8000 -h /www"
    run(client, f"podman run -d --name {name} -p {port}:8000 computed/busybox:latest sh -c {shlex.quote(script)}")




def refused(port: dict) -> bool:
    with socket.socket() as s:
        s.settimeout(5)
        return s.connect_ex((port["host"], port["host_port"])) != 0


def check_forwarded_ports(svc, inst: dict, client: paramiko.SSHClient, monkeypatch) -> dict:
    """The port asked for at launch reaches a container in the guest; one added while it
    runs works at once; one QEMU refuses is undone; one removed stops at once. The
    forwarded port of the launch."""
    [web] = inst["ports"]
    assert web["guest_port"] == 8080
    serve_in_container(client, "web", 8080, "hello from the guest")
    assert http_get(web) == "hello from the guest\n"

    added = svc.call("POST", f"/v1/instances/{inst['id']}/ports", expect=201, json={"guest_port": 9090})
    serve_in_container(client, "web2", 9090, "added while running")
    assert http_get(added) == "added while running\n"

    # a port another program took that the service's own check missed (as on a remote host):
    # QEMU refuses it, and nothing of the request stays
    low, high = svc.service.settings.forward_ports
    in_use = {p["host_port"] for p in (web, added)}
    with socket.socket() as squatter:
        taken = next(p for p in range(low, high + 1) if p not in in_use and port_is_free("127.0.0.1", p))
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        monkeypatch.setattr(computed.compute.ports, "port_is_free_on", lambda address, port, local: True)
        error = svc.call("POST", f"/v1/instances/{inst['id']}/ports", expect=409,
                         json={"guest_port": 7070, "host_port": taken})["error"]
        monkeypatch.undo()
    assert error["code"] == "InvalidPort.InUse" and "QEMU" in error["message"], error
    listed = svc.call("GET", f"/v1/instances/{inst['id']}/ports")["ports"]
    assert sorted(p["guest_port"] for p in listed) == [8080, 9090]
    definition = svc.service.default_driver.definition(f"computed-{inst['id']}")
    assert f":{taken}-" not in definition and f":{added['host_port']}-:9090" in definition

    svc.call("DELETE", f"/v1/instances/{inst['id']}/ports/{added['host_port']}", expect=204)
    assert refused(added)
    assert http_get(web) == "hello from the guest\n"
    return web


# four boots under TCG (two at once, a start, a reboot) while the fast part runs beside it: over
#: what of an instance's SSH view is its endpoint (its host key is known once the launch made it)
ENDPOINT = ("host", "port", "user", "command")


# the suite's 900 s per test in one CI run of two; each wait inside has its own bound (600 s)
@pytest.mark.timeout(1800)
def test_lifecycle_of_two_instances_launched_at_once(svc, keypair, monkeypatch):
    """One request for two instances (count, one idempotency token): two guests booting at
    once, each with its own SSH port and forwarded port. The second is checked (logged in,
    its own hostname) and terminated while it runs; the first goes through the whole
    lifecycle. (One request, not a test of its own: under TCG every boot costs minutes.)"""
    request = {"size": "t3.micro", "key_name": "vm-test", "user_data": USER_DATA, "tags": {"test": "lifecycle"},
               "ports": [{"guest_port": 8080}], "count": 2, "client_token": "lifecycle"}
    first, second = svc.call("POST", "/v1/instances", expect=202, json=request)["instances"]
    assert first["state"]["name"] == second["state"]["name"] == "pending"
    assert first["ssh"]["port"] != second["ssh"]["port"]
    assert first["ports"][0]["host_port"] != second["ports"][0]["host_port"]
    again = svc.call("POST", "/v1/instances", expect=202, json=request)["instances"]
    assert [i["id"] for i in again] == [first["id"], second["id"]]
    endpoint = {k: first["ssh"][k] for k in ENDPOINT}

    inst = svc.wait_ready(first["id"])
    assert {k: inst["ssh"][k] for k in ENDPOINT} == endpoint and inst["ssh"]["user"] == "debian"
    host_key = inst["ssh"]["host_key"]  # made at the launch: known once the guest is up
    assert host_key.startswith("ssh-ed25519 ") and inst["ssh"]["host_key_fingerprints"]
    assert f"computed-{inst['id']}" in domain_names()
    client = login(inst, keypair)
    assert run(client, "cloud-init status --wait >/dev/null; cat /var/tmp/from-user-data") == "via the API\n"
    assert run(client, "podman run --rm computed/busybox:latest echo hello") == "hello\n"
    assert run(client, "cloud-init status --wait >/dev/null; hostname").strip() == inst["id"]

    other = svc.wait_ssh(second["id"])
    other_client = login(other, keypair)
    assert run(other_client, "cloud-init status --wait >/dev/null; hostname").strip() == other["id"]
    other_client.close()
    svc.call("DELETE", f"/v1/instances/{other['id']}", expect=202)

    web = check_forwarded_ports(svc, inst, client, monkeypatch)
    client.close()
    svc.wait_state(other["id"], "terminated")
    assert_nothing_left(svc, other)
    console = svc.call("GET", f"/v1/instances/{inst['id']}/console")
    assert "cloud-init" in console["output"]

    svc.call("POST", f"/v1/instances/{inst['id']}/stop", expect=202)
    stopped = svc.wait_state(inst["id"], "stopped")
    assert stopped["ready"] == {"ssh": False, "container_engine": False}
    assert svc.call("POST", f"/v1/instances/{inst['id']}/reboot", expect=409)["error"]["code"] == "IncorrectInstanceState"

    svc.call("POST", f"/v1/instances/{inst['id']}/start", expect=202)
    inst = svc.wait_ready(inst["id"])
    assert {k: inst["ssh"][k] for k in ENDPOINT} == endpoint and inst["ssh"]["host_key"] == host_key
    client = login(inst, keypair)
    assert run(client, "cat /var/tmp/from-user-data") == "via the API\n"  # the same disk
    run(client, "podman start web")  # the forward is in the domain's definition: it survives the stop
    assert http_get(web) == "hello from the guest\n"
    boot_id = run(client, "cat /proc/sys/kernel/random/boot_id")
    client.close()

    svc.call("POST", f"/v1/instances/{inst['id']}/reboot", expect=202)
    inst = svc.wait_ssh(inst["id"])  # the engine was checked already: SSH is what a reboot must bring back
    client = login(inst, keypair)
    assert run(client, "cat /proc/sys/kernel/random/boot_id") != boot_id
    # the guest powers itself off: seen through libvirt's lifecycle event (the service reconciles
    # only hourly here), stopped as of the moment it went off, however long the guest took (the
    # service's engine check may still be running its container then)
    asked = dt.datetime.now(dt.UTC)
    client.exec_command("sudo systemctl poweroff")  # the session ends with the guest
    client.close()
    off = svc.wait_state(inst["id"], "stopped", timeout=300)
    seen = dt.datetime.now(dt.UTC)
    assert off["state_reason"]["code"] == "Client.InstanceInitiatedShutdown"
    changed = dt.datetime.fromisoformat(off["state_changed_at"].replace("Z", "+00:00"))
    assert asked <= changed <= seen, (asked, off["state_changed_at"], seen)

    # terminated from stopped (a start after a stop was seen above; one more boot would add nothing)
    svc.call("DELETE", f"/v1/instances/{inst['id']}", expect=202)
    svc.wait_state(inst["id"], "terminated")
    assert_nothing_left(svc, inst)


def test_launch_that_cannot_boot_ends_terminated_leaving_nothing(svc, settings, qemu_tmp):
    """An image whose kernel is not a kernel: QEMU refuses it, the launch is undone."""
    tmp_path = qemu_tmp("broken-")
    good = ImageLibrary(settings.image_library).get(settings.default_image)
    store = ImageLibrary(tmp_path / "images")
    with store.lock("broken"), store.staging("broken") as staging:
        for f in good.path.iterdir():
            if f.name != "disk.qcow2":
                shutil.copy(f, staging / f.name)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(staging / "disk.qcow2"), "1G"], check=True)
        (staging / "vmlinuz").write_bytes(b"this is not a kernel\n" * 1000)
        manifest = good.manifest
        from images.manifest import describe_artifact
        manifest.name = "broken"
        manifest.artifacts = {role: describe_artifact(staging / art["file"]) for role, art in manifest.artifacts.items()}
        manifest.write(staging)
        store.publish(staging)
    # domain type given: the module's service already showed that "auto" probes
    broken = RunningService(tmp_path / "service", tmp_path / "images", (43200, 43209), boot_timeout=120,
                            domain_type="qemu")
    try:
        launched = broken.call("POST", "/v1/instances", expect=202, json={"size": "t3.nano", "image": "broken"})
        [inst] = launched["instances"]
        final = broken.wait_state(inst["id"], "terminated", timeout=200)
        assert final["state_reason"]["code"].startswith(("Server.", "Client."))
        assert "launch failed" in final["state_reason"]["message"]
        assert_nothing_left(broken, inst)
    finally:
        broken.close()
