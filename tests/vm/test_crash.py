"""Crash safety: the service runs as a real process (``computed serve``) over libvirtd and
QEMU, and kills itself with SIGKILL at each named point of launch, stop, start and
terminate (``COMPUTED_FAULT_POINTS``, computed/faults.py). A fresh process on the same
store then reconciles, and afterwards: no orphan domain, no leaked file or port, no
instance left in a transitional state, and the usage events consistent (every running
stretch starts with a start, nothing is billed twice). The interrupted request is carried
out: a launch ends running, a stop stopped, a start running, a terminate terminated.

Guests are not waited for (no SSH): the points lie between the service's own steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from computed.compute.faults import POINTS
from computed.hosts.addresses import port_is_free
from computed.store.identity import store_id

from tests.store_domains import remove_store_domains, store_domains

from .service_harness import free_port

ROOT = Path(__file__).resolve().parents[2]
TRANSITIONAL = {"pending", "stopping", "shutting-down"}
#: the request a point interrupts, and the state the instance must end in
EXPECTED = {"launch": "running", "stop": "stopped", "start": "running", "terminate": "terminated"}
#: state -> states that may follow it in the usage events (EC2's machine, as the service drives it)
FOLLOWS = {
    "pending": {"running", "stopped", "shutting-down", "terminated"},
    "running": {"stopping", "stopped", "shutting-down", "terminated"},
    "stopping": {"stopped", "shutting-down", "terminated"},
    "stopped": {"pending", "shutting-down", "terminated"},
    "shutting-down": {"terminated"},
    "terminated": set(),
}


class ServiceProcess:
    """``computed serve`` in a child process on VAR_DIR, with the admin credentials it
    makes on first start."""

    def __init__(self, var_dir: Path, image_library: Path, ssh_ports: str, faults: str = ""):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMPUTED_")}
        env |= {"COMPUTED_VAR_DIR": str(var_dir), "COMPUTED_IMAGE_STORE": str(image_library),
                "COMPUTED_LIBVIRT_URI": "qemu:///system", "COMPUTED_DOMAIN_TYPE": "qemu",
                "COMPUTED_SSH_PORTS": ssh_ports, "COMPUTED_STOP_TIMEOUT": "3", "COMPUTED_BOOT_TIMEOUT": "600",
                "COMPUTED_FAULT_POINTS": faults, "COMPUTED_API_PORT": str(self.port)}
        self.log = (var_dir / "service.log").open("ab")
        self.proc = subprocess.Popen([sys.executable, "-c", "from computed.cli import main; main()", "serve"],
                                     env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        self.var_dir = var_dir
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert self.proc.poll() is None, f"the service exited: {self.proc.returncode}"
            time.sleep(0.2)
        creds = json.loads((var_dir / "admin-credentials.json").read_text())
        self.auth = (creds["access_key_id"], creds["secret_access_key"])

    def call(self, method: str, path: str, **kw):
        return requests.request(method, self.url + path, auth=self.auth, timeout=30, **kw)

    def state(self, instance_id: str) -> str:
        return self.call("GET", f"/v1/instances/{instance_id}").json()["state"]["name"]

    def wait_state(self, instance_id: str, state: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while (current := self.state(instance_id)) != state:
            assert time.monotonic() < deadline, f"{instance_id} is {current}, not {state}, after {timeout} s"
            time.sleep(0.2)

    def killed(self, timeout: float = 120) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def our_domains(var_dir: Path) -> dict[str, tuple[str, bool]]:
    """Instance id -> (domain name, active) of the domains of the store under VAR_DIR."""
    found = store_domains("qemu:///system", _store(var_dir))
    return {iid: (domains[0].name, domains[0].active) for iid, domains in found.items()}


def remove_domains(var_dir: Path) -> None:
    remove_store_domains("qemu:///system", _store(var_dir))


def _store(var_dir: Path) -> str:
    return store_id(f"sqlite:///{var_dir / 'computed.db'}")


def store_rows(var_dir: Path):
    engine = create_engine(f"sqlite:///{var_dir / 'computed.db'}")
    try:
        with engine.connect() as c:
            instances = {r.id: r for r in c.execute(text("SELECT id, state, ssh_port FROM instances"))}
            events = list(c.execute(text("SELECT id, instance_id, state FROM usage_events ORDER BY id")))
        return instances, events
    finally:
        engine.dispose()


def last_request(svc: ServiceProcess, method: str, path: str, **kw) -> None:
    """The request that reaches the fault point: the service may die before it answers
    (as a client of a crashed service sees it), or answer 202 first."""
    try:
        response = svc.call(method, path, **kw)
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
        return
    assert response.status_code == 202, response.text


def drive_to(svc: ServiceProcess, point: str) -> str | None:
    """Make the requests that reach POINT; the instance's id (None if the launch itself
    went unanswered: the store has it)."""
    action = point.split(".")[0]
    if action == "launch":
        last_request(svc, "POST", "/v1/instances", json={"size": "t3.nano"})
        return None
    response = svc.call("POST", "/v1/instances", json={"size": "t3.nano"})
    assert response.status_code == 202, response.text
    instance_id = response.json()["instances"][0]["id"]
    svc.wait_state(instance_id, "running")
    if action == "start":
        assert svc.call("POST", f"/v1/instances/{instance_id}/stop").status_code == 202
        svc.wait_state(instance_id, "stopped")
        last_request(svc, "POST", f"/v1/instances/{instance_id}/start")
    elif action == "stop":
        last_request(svc, "POST", f"/v1/instances/{instance_id}/stop")
    else:
        last_request(svc, "DELETE", f"/v1/instances/{instance_id}")
    return instance_id


@pytest.mark.parametrize("point", POINTS)
def test_a_kill_at_each_point_leaves_nothing_inconsistent(point, built_image, settings, qemu_tmp):
    built_image(settings.default_image)
    var_dir = qemu_tmp("crash-")
    low = 43400 + POINTS.index(point) * 10
    ports = f"{low}-{low + 9}"
    svc = ServiceProcess(var_dir, settings.image_library, ports, faults=point)
    try:
        instance_id = drive_to(svc, point)
        assert svc.killed() == -signal.SIGKILL, f"the service did not die at {point}"
        svc.stop()

        svc = ServiceProcess(var_dir, settings.image_library, ports)  # no faults: the restart
        deadline = time.monotonic() + 120
        while not requests.get(svc.url + "/health", timeout=5).json()["reconciled"]:
            assert time.monotonic() < deadline, "the restarted service never reconciled"
            time.sleep(0.2)
        if instance_id is None:
            [instance_id] = store_rows(var_dir)[0]
        expected = EXPECTED[point.split(".")[0]]
        svc.wait_state(instance_id, expected)

        instances, events = store_rows(var_dir)
        domains = our_domains(var_dir)
        live = {i for i, r in instances.items() if r.state != "terminated"}
        assert not {r.state for r in instances.values()} & TRANSITIONAL, instances
        # no orphan domain, and every live instance has its domain, running if running
        assert set(domains) == live, (domains, instances)
        for iid in live:
            assert domains[iid][1] == (instances[iid].state == "running"), (iid, instances[iid].state)
        # no leaked files
        on_disk = {p.name for p in (var_dir / "instances").iterdir() if p.name.startswith("i-")}
        assert on_disk == live
        # no leaked port: a terminated instance holds none, and its port is free again
        for iid, row in instances.items():
            if row.state == "terminated":
                assert row.ssh_port is None
        if instances[instance_id].state == "terminated":
            assert all(port_is_free("127.0.0.1", p) for p in range(low, low + 10))
        # the usage events: a valid walk of the state machine, ending where the instance is
        for iid, row in instances.items():
            walk = [e.state for e in events if e.instance_id == iid]
            assert walk[0] == "pending", walk
            for a, b in zip(walk, walk[1:]):
                assert b in FOLLOWS[a], f"{iid}: {a} -> {b} in {walk}"
            assert walk[-1] == row.state, walk
        # the service agrees, and works on
        if expected != "terminated":
            assert svc.call("DELETE", f"/v1/instances/{instance_id}").status_code == 202
            svc.wait_state(instance_id, "terminated")
            assert instance_id not in our_domains(var_dir)
    finally:
        svc.stop()
        remove_domains(var_dir)
