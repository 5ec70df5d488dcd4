"""libvirtd dies and comes back while the service runs: requests that need libvirt get a
clear 503 meanwhile (reads go on from the store), the service reconnects by itself, and
the instance that was running is still there, running, and can be stopped, started and
terminated."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests import libvirtd_lock

from .service_harness import RunningService, domain_names

SOCKET = Path("/run/libvirt/libvirt-sock")
UNITS = ["libvirtd.service", "libvirtd.socket", "libvirtd-ro.socket", "libvirtd-admin.socket"]


def systemd() -> bool:
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def answers() -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(SOCKET))
            return True
        except OSError:
            return False


def libvirtd_down() -> None:
    if systemd():
        subprocess.run(["systemctl", "stop", *UNITS], check=True)
    else:
        subprocess.run(["pkill", "-x", "libvirtd"], check=False)
    deadline = time.monotonic() + 30
    while answers() or subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "libvirtd did not stop"
        time.sleep(0.2)


def libvirtd_up() -> None:
    if systemd():
        subprocess.run(["systemctl", "start", *UNITS[1:], UNITS[0]], check=True)
    else:
        subprocess.run(["libvirtd", "-d"], check=True)
    deadline = time.monotonic() + 30
    while not answers():
        assert time.monotonic() < deadline, "libvirtd did not come back"
        time.sleep(0.2)


@pytest.fixture
def exclusive_libvirtd():
    """No test of the fast part, running at the same time (scripts/test), relies on libvirtd
    while this one stops it (tests/libvirtd_lock.py)."""
    with libvirtd_lock.exclusive():
        yield


@pytest.fixture
def svc(built_image, settings, qemu_tmp, exclusive_libvirtd):
    built_image(settings.default_image)
    running = RunningService(qemu_tmp("restart-"), settings.image_library, (43600, 43649), domain_type="qemu",
                             stop_timeout=5)
    yield running
    if not answers():
        libvirtd_up()
    for inst in running.call("GET", "/v1/instances")["instances"]:
        if inst["state"]["name"] != "terminated":
            running.call("DELETE", f"/v1/instances/{inst['id']}", expect=(202, 503))
    running.service.worker.idle(60)
    running.close()


def test_the_service_rides_out_a_libvirtd_restart(svc):
    [inst] = svc.call("POST", "/v1/instances", expect=202, json={"size": "t3.nano"})["instances"]
    iid = inst["id"]
    svc.wait_state(iid, "running", timeout=120)

    libvirtd_down()
    try:
        # what needs libvirt is refused, clearly; nothing is half-done
        for method, path, body in [("POST", "/v1/instances", {"size": "t3.nano"}),
                                   ("POST", f"/v1/instances/{iid}/stop", None),
                                   ("POST", f"/v1/instances/{iid}/reboot", None),
                                   ("DELETE", f"/v1/instances/{iid}", None)]:
            error = svc.call(method, path, expect=503, json=body)["error"]
            assert error["code"] == "ServiceUnavailable" and "cannot be reached" in error["message"]
        # what the store knows is still served
        assert svc.instance(iid)["state"]["name"] == "running"
        assert [i["id"] for i in svc.call("GET", "/v1/instances")["instances"]] == [iid]
    finally:
        libvirtd_up()

    # the service reconnects by itself at the next request
    deadline = time.monotonic() + 60
    while True:
        response = requests.post(f"{svc.url}/v1/instances/{iid}/stop", auth=svc.auth, timeout=30)
        if response.status_code == 202:
            break
        assert response.status_code == 503 and time.monotonic() < deadline, response.text
        time.sleep(1)
    svc.wait_state(iid, "stopped", timeout=120)
    assert f"computed-{iid}" in domain_names()  # the guest's domain lived through the restart
    svc.call("POST", f"/v1/instances/{iid}/start", expect=202)
    svc.wait_state(iid, "running", timeout=120)
    assert svc.service.default_driver.connections >= 2
    # nothing was lost: one instance, its events a walk from pending, nothing extra
    assert [i["id"] for i in svc.call("GET", "/v1/instances")["instances"]] == [iid]
    svc.call("DELETE", f"/v1/instances/{iid}", expect=202)
    svc.wait_state(iid, "terminated", timeout=120)
    assert f"computed-{iid}" not in domain_names()
