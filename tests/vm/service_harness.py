"""The service as a user meets it: ``computed``'s REST API on a real HTTP port (waitress in a
thread), over libvirtd (qemu:///system) and the images built by the project."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import libvirt
import requests
from sqlalchemy import select

from api.app import create_app
from computed.virt.libvirt.connection import DOMAIN_PREFIX
from computed.store.models import Instance
from computed.settings import Settings
from tests.http_server import ThreadedServer


class RunningService:
    def __init__(self, var_dir: Path, image_library: Path, ssh_ports: tuple[int, int], **overrides):
        self.settings = Settings.load({"COMPUTED_VAR_DIR": str(var_dir)}, libvirt_uri="qemu:///system",
                                      image_library=image_library, ssh_ports=ssh_ports, **overrides)
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
        return self.wait_diagnosed(instance_id, lambda i: i["state"]["name"] == "running" and i["ready"]["ssh"]
                                   and i["ready"]["container_engine"], timeout, "ready")

    def wait_ssh(self, instance_id: str, timeout: float = 600) -> dict:
        """Until the service has logged in (its container engine check may still be running)."""
        return self.wait_diagnosed(instance_id, lambda i: i["state"]["name"] == "running" and i["ready"]["ssh"],
                                   timeout, "answering SSH")

    def wait_diagnosed(self, instance_id: str, until, timeout: float, what: str) -> dict:
        """As wait; a failure also says what the instance's SSH endpoint answers (refused,
        silent, or a banner) and what its console shows (the prompt names the guest's
        addresses), so that a forward that is gone, a guest that never got an address and one
        whose sshd does not answer are told apart."""
        try:
            return self.wait(instance_id, until, timeout, what)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.diagnosis(instance_id)}") from None

    def diagnosis(self, instance_id: str) -> str:
        try:
            inst = self.instance(instance_id)
            endpoint = ssh_endpoint_answer(inst["ssh"]["host"], inst["ssh"]["port"])
            console = self.call("GET", f"/v1/instances/{instance_id}/console")["output"][-3000:]
        except (AssertionError, requests.RequestException) as e:
            return f"(no diagnosis: {e})"
        return f"--- SSH endpoint ---\n{endpoint}\n--- console ---\n{console}"

    def wait_state(self, instance_id: str, state: str, timeout: float = 300) -> dict:
        return self.wait(instance_id, lambda i: i["state"]["name"] == state, timeout, state)

    def close(self) -> None:
        """Stop serving; then the guests of this service's instances that a failed or
        timed-out test left are destroyed and undefined, so none outlives the test run."""
        self.server.close()
        with self.service.db.reading() as s:
            ids = set(s.scalars(select(Instance.id)))
        self.service.close()
        remove_domains({DOMAIN_PREFIX + i for i in ids})


def ssh_endpoint_answer(host: str | None, port: int | None) -> str:
    """What a TCP connection to HOST:PORT gets within 20 s: refused (nothing listens: QEMU's
    forward is gone), silence (QEMU forwards, nothing in the guest answers) or a banner."""
    if host is None or port is None:
        return "no SSH endpoint"
    try:
        with socket.create_connection((host, port), timeout=10) as s:
            s.settimeout(20)
            try:
                return f"{host}:{port} answered {s.recv(256)!r}"
            except TimeoutError:
                return f"{host}:{port} accepted the connection but sent no banner in 20 s"
    except OSError as e:
        return f"{host}:{port}: {e!r}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def remove_domains(names: set[str]) -> None:
    """Destroy and undefine those of NAMES that the system libvirtd has."""
    conn = libvirt.open("qemu:///system")
    try:
        for dom in conn.listAllDomains():
            if dom.name() in names:
                try:
                    if dom.isActive():
                        dom.destroy()
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
                except libvirt.libvirtError:
                    pass  # gone meanwhile
    finally:
        conn.close()


def domain_names() -> set[str]:
    conn = libvirt.open("qemu:///system")
    try:
        return {d.name() for d in conn.listAllDomains()}
    finally:
        conn.close()


def http_get(port: dict, timeout: float = 60) -> str:
    """The body GET / answers at a forwarded PORT of the API's, retried while the server
    in the guest is not up yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = requests.get(f"http://{port['host']}:{port['host_port']}/", timeout=10)
            if response.status_code == 200:
                return response.text
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, f"nothing answered at {port['host']}:{port['host_port']}"
        time.sleep(1)
