"""The service as a user meets it: ``computed``'s REST API on a real HTTP port (waitress in a
thread), over libvirtd (qemu:///system) and the images built by the project."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import libvirt
import requests

from api.app import create_app
from computed.settings import Settings
from tests.http_server import ThreadedServer


class RunningService:
    def __init__(self, var_dir: Path, image_store: Path, ssh_ports: tuple[int, int], **overrides):
        self.settings = Settings.load({"COMPUTED_VAR_DIR": str(var_dir)}, libvirt_uri="qemu:///system",
                                      image_store=image_store, ssh_ports=ssh_ports, **overrides)
        self.app = create_app(self.settings)
        self.service = self.app.extensions["computed"]
        creds = self.service.accounts.create("vm-tests")
        self.auth = (creds.access_key_id, creds.secret_access_key)
        self.server = ThreadedServer(self.app)
        self.url = self.server.url

    def call(self, method: str, path: str, expect: int | tuple[int, ...] = (200, 201, 202, 204), **kw):
        kw.setdefault("auth", self.auth)
        response = requests.request(method, self.url + path, timeout=60, **kw)
        expected = (expect,) if isinstance(expect, int) else expect
        assert response.status_code in expected, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    def instance(self, instance_id: str) -> dict:
        return self.call("GET", f"/v1/instances/{instance_id}")

    def wait(self, instance_id: str, until, timeout: float = 600, what: str = "") -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            inst = self.instance(instance_id)
            if until(inst):
                return inst
            if inst["state"]["name"] == "terminated" and not until(inst):
                raise AssertionError(f"{instance_id} ended terminated while waiting for {what}: {inst['state_reason']}")
            time.sleep(1)
        raise AssertionError(f"{instance_id}: not {what} within {timeout}s: {self.instance(instance_id)}")

    def wait_ready(self, instance_id: str, timeout: float = 600) -> dict:
        return self.wait(instance_id, lambda i: i["state"]["name"] == "running" and i["ready"]["ssh"]
                         and i["ready"]["container_engine"], timeout, "ready")

    def wait_ssh(self, instance_id: str, timeout: float = 600) -> dict:
        """Until the service has logged in (its container engine check may still be running)."""
        return self.wait(instance_id, lambda i: i["state"]["name"] == "running" and i["ready"]["ssh"], timeout,
                         "answering SSH")

    def wait_state(self, instance_id: str, state: str, timeout: float = 300) -> dict:
        return self.wait(instance_id, lambda i: i["state"]["name"] == state, timeout, state)

    def close(self) -> None:
        self.server.close()
        self.service.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def domain_names() -> set[str]:
    conn = libvirt.open("qemu:///system")
    try:
        return {d.name() for d in conn.listAllDomains()}
    finally:
        conn.close()
