"""Scheduling through the REST API, over several libvirt hosts of different capacities: each
a libvirt test driver of its own (``test:///<tmp_path>/hosts/<name>.xml``, a node of the
CPUs and memory given), with its own loopback address for its instances' SSH ports. The
store's first host (``local``, test:///default) is disabled, so every instance goes to a
fake host.

A test:///<path> host is private to the connection that opened it: its domains live in
the service's own connection and end with it (service.close at teardown), so these tests
leave nothing on the process-wide test:///default, which each one checks too. Two
services on one store each see only the domains they made themselves.

Covered: spread (the default) and pack, hosts filled to the last slot and then refused with
every host's reason and nothing half-made, a disabled host (nothing new, its instances
still stop, start and terminate), an unreachable host (nothing new, its instances keep
their state through reconciliation), stop and start on the same host, the SSH endpoint
on the host's address, and launches sent at once from many threads, to one service and
to two services on one store, never overcommitting a host."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from flask import Flask
from sqlalchemy import select

import computed.hosts.registry
from computed.virt import domain_xml
from computed.clock import FakeClock
from computed.store.models import Host, Instance, UsageEvent
from computed.compute.reconcile import Findings
from computed.service import Service
from tests.at_once import at_once as released_together
from tests.http_server import ThreadedServer
from tests.unit.conftest import DOMAIN_PREFIX

#: three hosts of 2, 4 and 8 t3.nano "slots" under cpu_overcommit 2: CPUs and memory in
#: proportion, so the host with the most room is the one with the most slots left
SLOTS = {"a": (2, 1024), "b": (4, 2048), "c": (8, 4096)}
SLOT_COUNTS = {"a": 2, "b": 4, "c": 8}
#: four hosts for launches sent at once (cpu_overcommit 1): some full by their vCPUs, some
#: by their memory; t3.nano fits a: 2 (either), b: 4 (vCPUs), c: 4 (memory), d: 6 (vCPUs)
MIXED = {"a": (4, 1024), "b": (8, 4096), "c": (16, 2048), "d": (12, 8192)}
MIXED_NANOS = {"a": 2, "b": 4, "c": 4, "d": 6}
AT_ONCE = 50


# -- fake hosts ---------------------------------------------------------------------------

@dataclass(frozen=True)
class FakeHost:
    name: str
    cpus: int
    memory_mib: int
    path: Path
    address: str

    @property
    def uri(self) -> str:
        return f"test://{self.path}"  # the path is absolute: test:///...


def node_xml(cpus: int, memory_mib: int) -> str:
    """A libvirt test driver's node: getInfo reports CPUS and MEMORY_MIB (it reads KiB)."""
    return (f"<node><cpu><mhz>2000</mhz><model>x86_64</model><active>{cpus}</active><nodes>1</nodes>"
            f"<sockets>1</sockets><cores>{cpus}</cores><threads>1</threads></cpu>"
            f"<memory>{memory_mib * 1024}</memory></node>")


@dataclass
class Cluster:
    app: Flask
    hosts: dict[str, FakeHost]
    changes: dict = field(default_factory=dict)

    @property
    def service(self) -> Service:
        return self.app.extensions["computed"]

    @property
    def client(self):
        return self.app.test_client()

    def launch(self, count: int = 1, size: str = "t3.nano"):
        return self.client.post("/v1/instances", json={"size": size, "count": count})

    def launched(self, count: int = 1, size: str = "t3.nano") -> list[dict]:
        response = self.launch(count, size)
        assert response.status_code == 202, response.get_data(as_text=True)
        return response.get_json()["instances"]

    def host_of(self, instance: dict) -> str:
        """The fake host an instance (as the API shows it) is on: its name, as a non-admin sees it."""
        assert instance["host"] == instance["placement"]["host"] in self.hosts, instance
        return instance["host"]

    def get(self, iid: str) -> dict:
        response = self.client.get(f"/v1/instances/{iid}")
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    def idle(self) -> None:
        assert self.service.worker.idle(60), "background work still running after 60 s"

    def domains(self, names=None) -> dict[str, dict[str, str]]:
        """Host name -> {instance id: libvirt state} of the domains on each fake host (all,
        or NAMES), through this service's own connection to it."""
        found = {}
        for name in names or self.hosts:
            conn = self.service.hosts.driver(name)
            found[name] = {d.name().removeprefix(DOMAIN_PREFIX): conn.state(d.name())
                           for d in conn.conn().listAllDomains() if d.name().startswith(DOMAIN_PREFIX)}
        return found


def placements(svc: Service) -> dict[str, list[Instance]]:
    """Host name -> its instances that are not terminated, as the store has them."""
    with svc.db.reading() as s:
        rows = list(s.scalars(select(Instance).where(Instance.state != "terminated")))
    placed: dict[str, list[Instance]] = {}
    for inst in rows:
        placed.setdefault(inst.host, []).append(inst)
    return placed


def counts(svc: Service) -> dict[str, int]:
    return {host: len(rows) for host, rows in placements(svc).items()}


def assert_within_capacity(svc: Service, hosts: dict[str, FakeHost]) -> None:
    """No host has more vCPUs or memory placed than its capacity times the ratios."""
    cpu, memory = svc.settings.cpu_overcommit, svc.settings.memory_overcommit
    placed = placements(svc)
    assert set(placed) <= set(hosts), placed  # nothing on local (disabled) or anywhere else
    for name, rows in placed.items():
        host = hosts[name]
        assert sum(i.vcpus for i in rows) <= int(host.cpus * cpu), (name, [i.id for i in rows])
        assert sum(i.memory_mib for i in rows) <= int(host.memory_mib * memory), (name, [i.id for i in rows])


def nothing_on_default(svc: Service) -> None:
    """test:///default is shared by the whole test process: none of these tests puts a
    domain there (local is disabled)."""
    assert [d.name() for d in svc.default_driver.conn().listAllDomains() if d.name().startswith(DOMAIN_PREFIX)] == []


def everything(cluster: Cluster) -> dict[str, set[str]]:
    """The instance ids (not terminated, for rows) found in each place a launch leaves
    something: rows, usage events, instance directories, domains on the fake hosts."""
    svc = cluster.service
    with svc.db.reading() as s:
        rows = set(s.scalars(select(Instance.id).where(Instance.state != "terminated")))
        events = set(s.scalars(select(UsageEvent.instance_id)))
    files = {p.name for p in svc.settings.instances_dir.iterdir()}
    domains = {iid for on_host in cluster.domains().values() for iid in on_host}
    return {"rows": rows, "usage events": events, "files": files, "domains": domains}


@pytest.fixture
def cluster(make_app, tmp_path):
    """cluster(capacities: {name: (CPUs, MiB)}, clock=None, same_address={}, **setting_changes)
    -> Cluster: an app on its own service whose store has those hosts (enabled, each at
    127.0.1.N, or at the address of the host same_address names) and local disabled. Its
    account may launch as much as the hosts hold."""
    made = []

    def build(capacities: dict[str, tuple[int, int]], clock=None, same_address: dict[str, str] | None = None,
              **changes) -> Cluster:
        changes = {"cpu_overcommit": 2.0, "memory_overcommit": 1.0, "account_max_instances": 1000,
                   # periodic reconciliation is left to the tests that call it
                   "reconcile_interval": 3600} | changes
        directory = tmp_path / f"hosts{len(made)}"
        directory.mkdir()
        app = make_app(clock=clock, **changes)
        svc = app.extensions["computed"]
        svc.hosts.set_enabled("local", False)
        hosts = {}
        for n, (name, (cpus, memory)) in enumerate(capacities.items()):
            path = directory / f"{name}.xml"
            path.write_text(node_xml(cpus, memory))
            address = hosts[same_address[name]].address if name in (same_address or {}) else f"127.0.1.{10 + n}"
            hosts[name] = FakeHost(name, cpus, memory, path, address)
            state = svc.hosts.add(name, hosts[name].uri, address=hosts[name].address)
            assert (state.host.vcpus, state.host.memory_mib) == (cpus, memory)  # the node's, from getInfo
        made.append(Cluster(app, hosts, changes))
        return made[-1]

    return build


def another_service(make_app, cluster: Cluster) -> Cluster:
    """A second service (its own connections, worker and housekeeping) on CLUSTER's store."""
    return Cluster(make_app(**cluster.changes), cluster.hosts, cluster.changes)


def launched_counts(cluster: Cluster, instances: list[dict]) -> dict[str, int]:
    return dict(Counter(cluster.host_of(i) for i in instances))


# -- spread and pack ------------------------------------------------------------------------

def test_spread_is_the_default_and_evens_out_the_room_left(cluster):
    c = cluster(SLOTS)
    assert c.service.settings.scheduler_strategy == "spread"
    first = [c.host_of(c.launched()[0]) for _ in range(8)]
    # c (8 slots) takes until it is level with b, then they alternate (the fewer
    # instances first at equal room): 2 slots left on each host
    assert first == ["c", "c", "c", "c", "b", "c", "b", "c"]
    assert counts(c.service) == {"b": 2, "c": 6}
    more = c.launched(count=3)  # one request's instances are spread too
    assert launched_counts(c, more) == {"a": 1, "b": 1, "c": 1}
    assert counts(c.service) == {"a": 1, "b": 3, "c": 7}  # one slot left on each
    c.idle()
    assert {name: set(on) for name, on in c.domains().items()} == {
        name: {i.id for i in rows} for name, rows in placements(c.service).items()}
    nothing_on_default(c.service)


def test_pack_fills_one_host_before_the_next(cluster):
    c = cluster(SLOTS, scheduler_strategy="pack")
    assert [c.host_of(c.launched()[0]) for _ in range(3)] == ["a", "a", "b"]
    assert launched_counts(c, c.launched(count=5)) == {"b": 3, "c": 2}
    assert counts(c.service) == {"a": 2, "b": 4, "c": 2}
    c.idle()
    assert {name: len(on) for name, on in c.domains().items()} == {"a": 2, "b": 4, "c": 2}
    nothing_on_default(c.service)


# -- full hosts ------------------------------------------------------------------------------

def test_full_hosts_refuse_with_every_hosts_reason_and_leave_nothing_half_made(cluster, expect_error):
    c = cluster(SLOTS)
    launched = c.launched(count=13)  # one slot short of everything
    c.idle()
    before = everything(c)
    assert before["rows"] == {i["id"] for i in launched}
    assert all(ids == before["rows"] for ids in before.values()), before
    # two do not fit: the second of the request finds no host, and neither is made
    message = expect_error(c.launch(count=2), 503, "InsufficientInstanceCapacity")
    assert message.startswith("no host can take a t3.nano for instance 2 of 2 (")
    c.idle()
    assert everything(c) == before
    [last] = c.launched()
    assert c.host_of(last) == "c"
    message = expect_error(c.launch(), 503, "InsufficientInstanceCapacity")
    assert message == (
        "no host can take a t3.nano ("
        "a: room for 4 vCPUs (2 times the overcommit ratio 2): 4 in use, 2 needed; "
        "b: room for 8 vCPUs (4 times the overcommit ratio 2): 8 in use, 2 needed; "
        "c: room for 16 vCPUs (8 times the overcommit ratio 2): 16 in use, 2 needed; "
        "local: disabled)")
    # any other size too
    expect_error(c.launch(size="t3.medium"), 503, "InsufficientInstanceCapacity")
    c.idle()
    after = everything(c)
    assert after == {what: ids | {last["id"]} for what, ids in before.items()}
    assert counts(c.service) == SLOT_COUNTS
    assert_within_capacity(c.service, c.hosts)
    assert all(state == "running" for on in c.domains().values() for state in on.values())
    nothing_on_default(c.service)


# -- disabled and unreachable hosts ------------------------------------------------------------

def test_a_disabled_host_takes_nothing_new_and_its_instances_still_stop_start_and_terminate(cluster):
    c = cluster(SLOTS)
    on_c = c.launched(count=3)
    assert {c.host_of(i) for i in on_c} == {"c"}
    c.idle()
    assert c.service.hosts.set_enabled("c", False).host.enabled is False
    # c has by far the most room, and gets nothing
    assert launched_counts(c, c.launched(count=5)) == {"a": 2, "b": 3}
    [kept, stopped, ended] = (i["id"] for i in on_c)
    assert c.client.post(f"/v1/instances/{stopped}/stop").status_code == 202
    assert c.client.delete(f"/v1/instances/{ended}").status_code == 202
    c.idle()
    assert c.get(stopped)["state"]["name"] == "stopped"
    assert c.get(ended)["state"]["name"] == "terminated"
    assert c.domains(["c"]) == {"c": {kept: "running", stopped: "shutoff"}}
    assert c.client.post(f"/v1/instances/{stopped}/start").status_code == 202
    c.idle()
    started = c.get(stopped)
    assert started["state"]["name"] == "running" and c.host_of(started) == "c"
    assert c.domains(["c"]) == {"c": {kept: "running", stopped: "running"}}
    # the room the terminated instance gave back stays unused while c is disabled
    [last] = c.launched()
    assert c.host_of(last) == "b"
    assert counts(c.service) == {"a": 2, "b": 4, "c": 2}
    message = c.launch().get_json()["error"]["message"]
    assert "c: disabled" in message
    # enabled again, it takes new instances (it has the only room left)
    c.service.hosts.set_enabled("c", True)
    assert c.host_of(c.launched()[0]) == "c"
    c.idle()
    assert_within_capacity(c.service, c.hosts)
    nothing_on_default(c.service)


def take_down(c: Cluster, name: str) -> None:
    """The host's libvirt goes away: its node file is gone, so no connection opens, and
    the service's connection is closed (as a dead libvirtd's would be), its domains with it."""
    c.hosts[name].path.unlink()
    c.service.hosts.driver(name).close()


@pytest.fixture
def always_ask(monkeypatch):
    """Every launch asks each host it may use (not only once a second): whether a host that
    died a moment ago was asked would otherwise depend on how fast the test runs."""
    monkeypatch.setattr(computed.hosts.registry, "FRESH", 0.0)


def test_an_unreachable_host_takes_nothing_new_and_its_instances_keep_their_state(cluster, expect_error,
                                                                                   always_ask):
    clock = FakeClock()
    # with cpu_overcommit 2: 4 t3.nano on x and on y, 8 on z
    c = cluster({"x": (4, 2048), "y": (4, 2048), "z": (8, 4096)}, clock=clock)
    [on_z, stopped_on_z] = [i["id"] for i in c.launched(count=2)]
    assert {c.host_of(c.get(i)) for i in (on_z, stopped_on_z)} == {"z"}
    c.idle()  # running
    assert c.client.post(f"/v1/instances/{stopped_on_z}/stop").status_code == 202
    c.idle()
    take_down(c, "z")
    # z has the most room left (6 slots; the stopped instance keeps its place), yet the
    # launch goes elsewhere: the launch asked z first and recorded it unreachable
    assert launched_counts(c, c.launched(count=2)) == {"x": 1, "y": 1}
    c.idle()
    with c.service.db.reading() as s:
        z = s.get(Host, "z")
        assert (z.reachable, "cannot be reached" in z.last_error) == (False, True)
    # long after, a reconciliation pass looks at every instance: those on z are left as
    # they are (none ended as vanished), those elsewhere found as they should be
    clock.advance(minutes=30)
    assert c.service.reconciler.run() == Findings()
    assert c.get(on_z)["state"]["name"] == "running"
    assert c.get(stopped_on_z)["state"]["name"] == "stopped"
    # what would need z now is refused, and changes nothing
    expect_error(c.client.post(f"/v1/instances/{on_z}/stop"), 503, "ServiceUnavailable")
    expect_error(c.client.post(f"/v1/instances/{stopped_on_z}/start"), 503, "ServiceUnavailable")
    expect_error(c.client.delete(f"/v1/instances/{on_z}"), 503, "ServiceUnavailable")
    c.idle()
    assert (c.get(on_z)["state"]["name"], c.get(stopped_on_z)["state"]["name"]) == ("running", "stopped")
    assert {p.name for p in c.service.settings.instances_dir.iterdir()} >= {on_z, stopped_on_z}
    # x and y fill up; the refusal names z as unreachable
    assert launched_counts(c, c.launched(count=6)) == {"x": 3, "y": 3}
    message = expect_error(c.launch(), 503, "InsufficientInstanceCapacity")
    assert message.endswith("; z: unreachable)")
    c.idle()
    assert counts(c.service) == {"x": 4, "y": 4, "z": 2}
    on_x_y = c.domains(["x", "y"])
    assert all(state == "running" for on in on_x_y.values() for state in on.values())
    assert {n: len(on) for n, on in on_x_y.items()} == {"x": 4, "y": 4}
    nothing_on_default(c.service)


def test_with_every_enabled_host_unreachable_a_launch_is_refused_and_makes_nothing(cluster, expect_error,
                                                                                    always_ask):
    c = cluster({"x": (4, 2048), "y": (4, 2048)})
    take_down(c, "x")
    take_down(c, "y")
    message = expect_error(c.launch(), 503, "ServiceUnavailable")
    assert message.startswith("no host can take the launch: the libvirt hosts cannot be reached")
    assert c.service.instances.count() == 0
    assert list(c.service.settings.instances_dir.iterdir()) == []
    nothing_on_default(c.service)


# -- an instance's host ------------------------------------------------------------------------

def test_stop_and_start_keep_an_instance_on_its_host_and_its_place(cluster, expect_error):
    c = cluster(SLOTS)
    [inst] = c.launched()
    assert c.host_of(inst) == "c"
    c.idle()  # running
    host_key = c.get(inst["id"])["ssh"]["host_key"]
    assert host_key is not None
    assert c.client.post(f"/v1/instances/{inst['id']}/stop").status_code == 202
    c.idle()
    # every other slot taken: the stopped instance's place is kept for it
    c.launched(count=13)
    expect_error(c.launch(), 503, "InsufficientInstanceCapacity")
    assert c.client.post(f"/v1/instances/{inst['id']}/start").status_code == 202
    c.idle()
    again = c.get(inst["id"])
    assert again["state"]["name"] == "running"
    endpoint = ("host", "port", "user", "command")  # and its host key, made at the launch, is kept
    assert (again["host"], {k: again["ssh"][k] for k in endpoint}) == (inst["host"], {k: inst["ssh"][k] for k in endpoint})
    assert again["ssh"]["host_key"] == host_key
    domains = c.domains()
    assert domains["c"][inst["id"]] == "running"
    assert [n for n, on in domains.items() if inst["id"] in on] == ["c"]
    assert_within_capacity(c.service, c.hosts)
    nothing_on_default(c.service)


def test_an_instances_ssh_endpoint_is_on_its_hosts_address(cluster, free_ports, parse_ssh):
    low, high = free_ports(10)
    c = cluster({"x": (4, 2048), "y": (4, 2048), "z": (4, 2048)}, ssh_ports=(low, high))
    first, second = c.launched(count=3), c.launched(count=3)
    for inst in first + second:
        host = c.hosts[c.host_of(inst)]
        assert inst["ssh"]["host"] == host.address
        options, rest = parse_ssh(inst["ssh"]["command"])
        assert rest == [f"debian@{host.address}"] and options["-p"] == str(inst["ssh"]["port"])
    # each address has its own ports: the first instance on each has the first port
    assert sorted((c.host_of(i), i["ssh"]["port"]) for i in first) == [("x", low), ("y", low), ("z", low)]
    assert sorted((c.host_of(i), i["ssh"]["port"]) for i in second) == [("x", low + 1), ("y", low + 1),
                                                                          ("z", low + 1)]
    c.idle()
    # each domain is made on its instance's host, and says so in its metadata (the test
    # driver keeps no QEMU command line, where the forwarded port goes: see test_domain_xml)
    domains = c.domains()
    for inst in first + second:
        host = c.host_of(inst)
        assert [n for n, on in domains.items() if inst["id"] in on] == [host]
        xml = c.service.hosts.driver(host).conn().lookupByName(DOMAIN_PREFIX + inst["id"]).XMLDesc()
        assert domain_xml.read_metadata(xml)["host"] == host
    nothing_on_default(c.service)


def test_hosts_on_one_address_share_its_ports_and_a_host_with_ports_left_takes_the_rest(cluster, free_ports,
                                                                                         expect_error):
    """Two hosts may be one machine: a port is taken on an address whichever host holds it.
    When the address of the host with the most room has no port left, a host elsewhere
    that has room and ports takes the launch."""
    low, high = free_ports(2)
    # y is x's machine by another URI
    c = cluster({"x": (8, 4096), "y": (8, 4096), "z": (2, 1024)}, same_address={"y": "x"}, ssh_ports=(low, high))
    first = c.launched(count=2)
    assert [c.host_of(i) for i in first] == ["x", "y"]
    assert sorted(i["ssh"]["port"] for i in first) == [low, high]
    # x and y have far more room than z, but no port left on their address
    [third] = c.launched()
    assert (c.host_of(third), third["ssh"]["host"], third["ssh"]["port"]) == ("z", c.hosts["z"].address, low)
    c.idle()
    assert counts(c.service) == {"x": 1, "y": 1, "z": 1}
    nothing_on_default(c.service)


# -- launches at once ----------------------------------------------------------------------------

def at_once(send, n: int = AT_ONCE) -> list[requests.Response]:
    return released_together(send, n)


def outcome(responses) -> dict[str, int]:
    """How many answers had each error code ("" for 202)."""
    return dict(Counter("" if r.status_code == 202 else r.json()["error"]["code"] for r in responses))


def ids_of(responses) -> set[str]:
    return {i["id"] for r in responses if r.status_code == 202 for i in r.json()["instances"]}


@pytest.fixture
def serve():
    """serve(cluster) -> base URL: its app under waitress with a thread per request sent at once."""
    servers = []

    def start(c: Cluster) -> str:
        servers.append(ThreadedServer(c.app, threads=AT_ONCE))
        return servers[-1].url

    yield start
    for server in servers:
        server.close()


def post(url: str, auth, body: dict) -> requests.Response:
    return requests.post(f"{url}/v1/instances", json=body, auth=auth, timeout=60)


def test_launches_at_once_fill_the_hosts_exactly_and_never_overcommit(cluster, serve):
    c = cluster(MIXED, cpu_overcommit=1.0)
    url, auth = serve(c), c.app.config["TEST_AUTH"]
    responses = at_once(lambda i: post(url, auth, {"size": "t3.nano"}))
    fits = sum(MIXED_NANOS.values())
    assert outcome(responses) == {"": fits, "InsufficientInstanceCapacity": AT_ONCE - fits}
    assert all(r.status_code == 503 for r in responses if r.status_code != 202)
    assert counts(c.service) == MIXED_NANOS
    assert_within_capacity(c.service, c.hosts)
    c.idle()
    launched = ids_of(responses)
    assert everything(c) == dict.fromkeys(("rows", "usage events", "files", "domains"), launched)
    nothing_on_default(c.service)


def test_mixed_sizes_at_once_never_overcommit_and_refuse_only_what_fits_nowhere(cluster, serve):
    c = cluster(MIXED, cpu_overcommit=1.0)
    url, auth = serve(c), c.app.config["TEST_AUTH"]
    sizes = ("t3.nano", "t3.micro", "t3.small")
    responses = at_once(lambda i: post(url, auth, {"size": sizes[i % 3]}))
    assert set(outcome(responses)) <= {"", "InsufficientInstanceCapacity"}
    assert_within_capacity(c.service, c.hosts)
    # placements only grow here: a size refused at some moment fits on no host at the end
    refused = {sizes[i % 3] for i, r in enumerate(responses) if r.status_code != 202}
    placed = placements(c.service)
    for size in map(c.service.sizes.get, refused):
        for name, host in c.hosts.items():
            used_cpu = sum(i.vcpus for i in placed.get(name, []))
            used_memory = sum(i.memory_mib for i in placed.get(name, []))
            assert (used_cpu + size.vcpus > host.cpus * c.service.settings.cpu_overcommit
                    or used_memory + size.memory_mib > host.memory_mib * c.service.settings.memory_overcommit), \
                (size.name, name)
    c.idle()
    launched = ids_of(responses)
    assert launched and everything(c) == dict.fromkeys(("rows", "usage events", "files", "domains"), launched)
    nothing_on_default(c.service)


def test_two_services_on_one_store_launching_at_once_never_overcommit_a_host(cluster, make_app, serve):
    """Each service has its own connections (to its own private test drivers), worker and
    database connections; only the store is shared, and its placements are what is
    checked. Reconciliation is left out (reconcile_interval, the cluster's): each service
    sees only its own domains, and would take the other's instances for vanished ones."""
    one = cluster(MIXED, cpu_overcommit=1.0)
    two = another_service(make_app, one)
    for c in (one, two):  # their at-start passes done before anything is launched
        assert c.service.reconciled.wait(60)
    urls, auth = (serve(one), serve(two)), one.app.config["TEST_AUTH"]
    for url in urls:  # each service's server, credentials and store connections warm: neither starts late
        for _ in range(3):
            assert requests.get(f"{url}/v1/instances", auth=auth, timeout=60).status_code == 200
    fits = sum(MIXED_NANOS.values())
    # each service asks for fewer than fit and both together for more, so however the
    # requests interleave, both services place some and some are refused (a load that lets
    # one service's requests all come first must not leave the other nothing to race for)
    per_service = fits * 3 // 4
    responses = at_once(lambda i: post(urls[i % 2], auth, {"size": "t3.nano"}), 2 * per_service)
    assert outcome(responses) == {"": fits, "InsufficientInstanceCapacity": 2 * per_service - fits}
    assert counts(one.service) == MIXED_NANOS
    assert_within_capacity(one.service, one.hosts)
    # each service made the instances it placed, on its own connections
    by_service = [ids_of(responses[i::2]) for i in (0, 1)]
    assert by_service[0] and by_service[1]
    for c, launched in zip((one, two), by_service):
        c.idle()
        assert {iid for on in c.domains().values() for iid in on} == launched
        assert {iid for on in c.domains().values() for iid, state in on.items() if state == "running"} == launched
    assert everything(one)["rows"] == by_service[0] | by_service[1]
    assert {p.name for p in one.service.settings.instances_dir.iterdir()} == by_service[0] | by_service[1]
    nothing_on_default(one.service)
