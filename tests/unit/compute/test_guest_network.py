"""The guests' network as the service sets it up, on libvirt's test driver: restricted by
default; with guest outbound on, no guest starts (launch or start) unless the guest firewall
is in place, and the refusal says why. (What the network and the firewall do to real
traffic: tests/unit/virt/test_guest_firewall.py and tests/vm/test_guest_network.py.)"""

from __future__ import annotations

import functools
import types

import pytest
import computed.service
from computed.store.models import Instance
from computed.virt import domain_xml
from computed.virt.errors import LaunchError
from computed.virt.guest_firewall import GuestFirewall
from tests.fakes import FakeNft


@pytest.fixture
def nft(monkeypatch):
    """The service's guest firewall runs this nft (in memory: a unit test never changes the
    host's own firewall)."""
    fake = FakeNft()
    monkeypatch.setattr(computed.service, "GuestFirewall",
                        functools.partial(GuestFirewall, run=fake, user=lambda: "+4000000"))
    return fake


@pytest.fixture
def defined(monkeypatch):
    """The XML of each domain defined, by name."""
    from computed.virt.libvirt.connection import LibvirtDriver
    seen = {}
    define = LibvirtDriver.define

    def spy(host, xml):
        seen[xml.split("<name>", 1)[1].split("</name>", 1)[0]] = xml
        define(host, xml)
    monkeypatch.setattr(LibvirtDriver, "define", spy)
    return seen


def only(client):
    [inst] = client.get("/v1/instances").get_json()["instances"]
    return inst


def test_by_default_guests_are_restricted_and_no_firewall_is_touched(client, launch, wait, defined, nft):
    launch()
    wait()
    assert only(client)["state"]["name"] == "running"
    [xml] = defined.values()
    assert domain_xml.netdev_of(xml).split(",")[:3] == ["user", "id=computed-net0", "restrict=on"]
    assert nft.table is None and nft.installs == 0


def test_with_outbound_the_firewall_is_installed_at_start_and_guests_are_not_restricted(make_app, launch, wait,
                                                                                        defined, nft):
    app = make_app(guest_outbound=True)
    assert nft.installs == 1  # at the service's start
    client = app.test_client()
    client.post("/v1/instances", json={"size": "t3.micro"})
    wait(app.extensions["computed"])
    assert only(client)["state"]["name"] == "running"
    [xml] = defined.values()
    assert "restrict=on" not in domain_xml.netdev_of(xml)
    assert nft.installs == 1  # found in place, not installed again


def detail(svc, instance_id: str) -> str:
    """The detail of the instance's state reason, which admins see (tenants: an error id)."""
    with svc.db.reading() as s:
        return s.get(Instance, instance_id).state_reason_detail or ""


def test_with_outbound_a_launch_is_refused_without_the_firewall(make_app, wait, nft, settings):
    nft.install_fails = "Error: Could not process rule: Operation not permitted"
    app = make_app(guest_outbound=True)  # the service starts all the same: admins can see and fix it
    svc = app.extensions["computed"]
    client = app.test_client()
    assert client.post("/v1/instances", json={"size": "t3.micro"}).status_code == 202
    wait(svc)
    inst = only(client)
    assert inst["state"]["name"] == "terminated"
    assert "the launch failed (error id e-" in inst["state_reason"]["message"]  # a tenant's view
    reason = detail(svc, inst["id"])  # an admin's
    assert "guest outbound network is on" in reason and "Operation not permitted" in reason, reason
    assert "not started" in reason
    assert svc.default_driver.definition(f"computed-{inst['id']}") is None
    assert not (settings.instances_dir / inst["id"]).exists()


def test_with_outbound_a_start_is_refused_when_the_firewall_is_gone(make_app, wait, nft):
    app = make_app(guest_outbound=True)
    svc = app.extensions["computed"]
    client = app.test_client()
    instance_id = client.post("/v1/instances", json={"size": "t3.micro"}).get_json()["instances"][0]["id"]
    wait(svc)
    assert client.post(f"/v1/instances/{instance_id}/stop").status_code == 202
    wait(svc)
    nft.table, nft.install_fails = None, "Error: nft is broken here"  # flushed by someone, and cannot be put back
    assert client.post(f"/v1/instances/{instance_id}/start").status_code == 202
    wait(svc)
    inst = only(client)
    assert inst["state"]["name"] == "stopped"
    assert "the start failed (error id e-" in inst["state_reason"]["message"]
    assert "guest outbound network is on" in detail(svc, instance_id)
    assert "nft is broken here" in detail(svc, instance_id)
    assert svc.default_driver.state(f"computed-{instance_id}") == "shutoff"

    nft.install_fails = None  # fixed: the next start installs it and the guest starts
    assert client.post(f"/v1/instances/{instance_id}/start").status_code == 202
    wait(svc)
    assert only(client)["state"]["name"] == "running"


class DefinitionsOnly:
    """A host that keeps domain definitions and does nothing else (libvirt's test driver
    drops QEMU's command line, where the network is)."""

    def __init__(self):
        self.xml: dict[str, str] = {}

    def definition(self, name):
        return self.xml.get(name)

    def define(self, xml):
        self.xml[xml.split("<name>", 1)[1].split("</name>", 1)[0]] = xml


def test_a_domain_defined_without_restriction_is_restricted_when_it_starts(service):
    """A domain an older service defined has no restrict=on: its next start gets it, and
    keeps its forwards; one already right is not defined again."""
    from tests.unit.virt.test_domain_xml import spec
    host = DefinitionsOnly()
    old = domain_xml.build(spec(outbound=True, forwards=(("127.0.0.1", 43000, 80),)))
    host.define(old)
    port = types.SimpleNamespace(host_address="127.0.0.1", host_port=43000, guest_port=80)
    inst = types.SimpleNamespace(id="i-0123456789abcdef0", domain_name=spec().name, ssh_host="127.0.0.1",
                                 ssh_port=42211, ports=[port])
    service.provisioner.renew_network(inst, host)
    assert domain_xml.netdev_of(host.definition(inst.domain_name)) == (
        "user,id=computed-net0,restrict=on,hostfwd=tcp:127.0.0.1:42211-:22,hostfwd=tcp:127.0.0.1:43000-:80")
    host.define = None  # already as the settings say: not defined again
    service.provisioner.renew_network(inst, host)


def test_with_outbound_guests_of_remote_hosts_are_not_started(make_app, nft):
    svc = make_app(guest_outbound=True).extensions["computed"]
    remote = types.SimpleNamespace(host="far", host_uri="qemu+ssh://root@far.example/system")
    with pytest.raises(LaunchError, match="own machine only, not on the host far"):
        svc.provisioner.check_network(remote)
