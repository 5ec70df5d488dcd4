"""The core's read model of an instance (``computed.compute.view``), as ``service.views``
makes it: the SSH endpoint (none once terminated), who the key logs in as and the ssh
command, the host's reachability, the cost so far, the ports and tags shown; and a page's
reachability and costs read once, only when asked for."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from computed.clock import FakeClock
from computed.compute.view import InstanceViews
from computed.errors import ServiceUnavailable

T0 = dt.datetime(2026, 3, 1, 10, 30, tzinfo=dt.UTC)


@pytest.fixture
def row(app, service):
    """row(instance_id) -> the instance's row, as the test account sees it."""
    return lambda instance_id: service.instances.get(app.config["TEST_CALLER"], instance_id)


def test_an_instance_without_a_key(launch, wait, service, row):
    iid = launch(tags={"env": "prod", "role": "web"}, ports=[{"guest_port": 8080}])["instances"][0]["id"]
    wait()
    service.hosts.check()
    inst = row(iid)
    v = service.views.of(inst)
    assert v.instance is inst and inst.state == "running"
    assert v.ssh_endpoint == (inst.ssh_host, inst.ssh_port) and inst.ssh_port is not None
    assert v.login_user == "debian"  # the fake image's default user
    assert v.ssh_command == f"ssh -p {inst.ssh_port} debian@{inst.ssh_host}"
    assert v.host_reachable is True
    assert v.tags == (("env", "prod"), ("role", "web"))
    assert [(p.guest_port, p.protocol) for p in v.ports] == [(8080, "tcp")]
    assert v.availability_zone == "computed-1a"


def test_an_instance_with_a_key(client, launch, wait, service, row):
    assert client.post("/v1/keypairs", json={"name": "mine"}).status_code == 201
    iid = launch(key_name="mine")["instances"][0]["id"]
    wait()
    inst = row(iid)
    v = service.views.of(inst)
    assert v.ssh_command == f"ssh -i mine.pem -p {inst.ssh_port} debian@{inst.ssh_host}"
    assert v.tags == () and v.ports == ()


def test_a_terminated_instance_has_no_endpoint_and_no_ports(client, launch, wait, service, row):
    assert client.post("/v1/keypairs", json={"name": "mine"}).status_code == 201
    iid = launch(key_name="mine", ports=[{"guest_port": 8080}])["instances"][0]["id"]
    wait()
    assert client.delete(f"/v1/instances/{iid}").status_code == 202
    wait()
    inst = row(iid)
    v = service.views.of(inst)
    assert inst.state == "terminated"
    assert v.ssh_endpoint is None and v.ssh_command is None
    assert v.ports == ()
    assert v.login_user == "debian"  # still the image's; there is just nowhere to log in


def test_an_instance_on_an_unreachable_host(launch, wait, service, row, monkeypatch):
    iid = launch()["instances"][0]["id"]
    wait()

    def unreachable():
        raise ServiceUnavailable("the libvirt host cannot be reached: gone")

    monkeypatch.setattr(service.hosts.driver("local"), "capacity", unreachable)
    assert service.hosts.check()["local"]
    v = service.views.of(row(iid))
    assert v.instance.host == "local" and v.host_reachable is False
    assert v.ssh_endpoint is not None  # the instance keeps its endpoint; its host did not answer


def test_a_page_has_its_costs_computed_once(make_app, wait):
    clock = FakeClock(T0)
    app = make_app(clock=clock, billing_policy="hourly")
    client, svc = app.test_client(), app.extensions["computed"]
    ids = [i["id"] for i in client.post("/v1/instances", json={"size": "t3.micro", "count": 2}).get_json()["instances"]]
    wait(svc)
    clock.advance(minutes=80)  # 10:30 to 11:50: two hours at 0.0104 (each instance)
    rows = [svc.instances.get(app.config["TEST_CALLER"], i) for i in ids]
    asked: list[list[str]] = []

    def costs_so_far(instances):
        asked.append(sorted(i.id for i in instances))
        return svc.billing.costs_so_far(instances)

    page = InstanceViews(svc.db, svc.settings, svc.provisioner.login_user, costs_so_far).page(rows)
    assert [v.instance.id for v in page] == ids
    assert [v.cost_so_far for v in page] == [Decimal("0.0208"), Decimal("0.0208")]
    assert asked == [sorted(ids)]  # one computation for the page
    assert [svc.billing.cost_so_far(r) for r in rows] == [v.cost_so_far for v in page]


def test_what_is_not_asked_for_is_not_read(launch, wait, service, row):
    """EC2 shows the endpoint and tags only: no manifest is read and no cost computed for it."""
    ids = [i["id"] for i in launch(count=2)["instances"]]
    wait()
    called = []

    def login_user(inst):
        called.append(("login_user", inst.id))
        return "debian"

    def costs_so_far(instances):
        called.append(("costs", len(instances)))
        return {i.id: Decimal(0) for i in instances}

    page = InstanceViews(service.db, service.settings, login_user, costs_so_far).page(row(i) for i in ids)
    assert all(v.ssh_endpoint is not None for v in page) and [v.tags for v in page] == [(), ()]
    assert called == []
    assert [v.ssh_command is not None for v in page] == [True, True]
    assert [v.cost_so_far for v in page] == [Decimal(0), Decimal(0)]
    assert [v.login_user for v in page] == ["debian", "debian"]  # read once per instance
    assert called == [("login_user", ids[0]), ("login_user", ids[1]), ("costs", 2)]
