"""Reconciliation (computed/reconcile.py), libvirt lifecycle events and fault points, on
libvirt's test driver: its domains really go running and shut off, and it delivers
lifecycle events to callbacks registered on any connection (a separate connection stands
in for a user with virsh, or a guest powering itself off).

Two ways to reach the at-start pass: a second app on the same store after the first one
was closed (a restart: its housekeeping thread reconciles at once), or
``reconciler.run(at_start=True)`` called directly once the app's own background pass is
done (``reconciled``), on state set directly in the store with ``state_changed_at``
before the service started (as a crash would have left it)."""

from __future__ import annotations

import ast
import datetime as dt
import re
import secrets
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import libvirt
import pytest
from sqlalchemy import delete, select

import computed
from api.app import create_app
from computed.virt import domain_xml
from computed.virt.libvirt import connection as libvirt_driver
from computed.clock import FakeClock
from computed.errors import ServiceUnavailable
from computed.compute.faults import POINTS, Faults
from computed.compute.state import CRASHED, DESTROYED_OUTSIDE, SELF_SHUTDOWN, USER_STOP, USER_TERMINATE, VANISHED
from computed.store.models import Host, Instance, UsageEvent
from computed.virt.provisioner import Undo
from computed.compute.reconcile import GRACE, Findings

TEST_URI = "test:///default"  # the shared test driver (conftest)

T0 = dt.datetime(2026, 4, 1, 9, 0, tzinfo=dt.UTC)
BEFORE_START = T0 - dt.timedelta(minutes=5)  # a state the last run of the service left


# -- helpers ------------------------------------------------------------------------------

def new_id() -> str:
    return "i-" + secrets.token_hex(9)[:17]


def ready(make_app, clock=None, events: bool = True, **changes):
    """An app whose at-start reconciliation and whatever work it queued are done. With
    events=False it ignores libvirt's lifecycle events: a test that changes domains by hand
    and then calls the reconciler itself would otherwise race the work an event queues
    (work in flight, which reconciliation rightly leaves alone)."""
    flush_events()
    app = make_app(clock=clock, **changes)
    svc = app.extensions["computed"]
    if not events:
        svc.default_driver.on_guest_stopped = None
    assert svc.reconciled.wait(60), "the at-start reconciliation did not finish"
    assert svc.worker.idle(60)
    return app, svc


def flush_events() -> None:
    """The test driver queues lifecycle events and hands them out a moment later to every
    callback registered by then, including one registered after the change (libvirtd
    would not): wait until what a test did by hand has been handed out, lest a service
    started next receive the events of what happened "while it was down". Events come out
    in order, so a marker domain's own event coming out means the earlier ones have."""
    libvirt_driver._start_event_loop()  # a connection delivers events only if the loop came first
    name = f"flush-{secrets.token_hex(6)}"  # no computed- name: every service ignores it
    seen = threading.Event()

    def listen(conn, dom, event, detail, opaque):
        if dom.name() == name and event == libvirt.VIR_DOMAIN_EVENT_UNDEFINED:
            seen.set()

    with virsh() as conn:
        callback = conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, listen, None)
        try:
            conn.defineXML(f"<domain type='test'><name>{name}</name><memory>1024</memory>"
                           "<os><type>hvm</type></os></domain>").undefine()
            assert seen.wait(5), "the test driver's events did not come out"
        finally:
            conn.domainEventDeregisterAny(callback)


def restart(make_app, app, clock: FakeClock, **advance):
    """The service goes down (no more events, no housekeeping), time passes, and a new
    service on the same store starts and reconciles."""
    app.extensions["computed"].close()
    clock.advance(**advance)
    return ready(make_app, clock)


def launch(app, svc) -> str:
    response = app.test_client().post("/v1/instances", json={"size": "t3.micro"})
    assert response.status_code == 202, response.get_data(as_text=True)
    iid = response.get_json()["instances"][0]["id"]
    assert svc.worker.idle(60)
    assert row(svc, iid).state == "running"
    return iid


def launch_committed_only(app, svc, monkeypatch) -> str:
    """An instance the API wrote as pending whose launch never began (fault point
    launch.committed): the worker is never handed the launch."""
    with monkeypatch.context() as m:
        m.setattr(svc.lifecycle, "launch", lambda instance_id: None)
        response = app.test_client().post("/v1/instances", json={"size": "t3.micro"})
    assert response.status_code == 202, response.get_data(as_text=True)
    iid = response.get_json()["instances"][0]["id"]
    assert row(svc, iid).state == "pending"
    return iid


def row(svc, iid: str) -> Instance | None:
    with svc.db.reading() as s:
        return s.get(Instance, iid)


def set_row(svc, iid: str, **fields) -> None:
    """Change the store behind the service's back (no usage event: what a crash leaves)."""
    with svc.db.session() as s:
        inst = s.get(Instance, iid)
        for key, value in fields.items():
            setattr(inst, key, value)


def events(svc, iid: str) -> list[tuple[str, dt.datetime]]:
    with svc.db.reading() as s:
        return [(e.state, e.at) for e in s.scalars(select(UsageEvent).where(UsageEvent.instance_id == iid)
                                                    .order_by(UsageEvent.id))]


def domain_state(svc, iid: str) -> str | None:
    return svc.default_driver.state(f"computed-{iid}")


def domain_id(iid: str) -> int:
    """libvirt's id of the running domain: a new one each time it is started."""
    with virsh() as conn:
        return conn.lookupByName(f"computed-{iid}").ID()


def our_names(svc) -> list[str]:
    return sorted(d.name() for d in svc.default_driver.conn().listAllDomains() if d.name().startswith("computed-"))


@contextmanager
def virsh():
    """A connection of its own to the shared test driver, as another program's."""
    conn = libvirt.open(TEST_URI)
    try:
        yield conn
    finally:
        conn.close()


def define_domain(name: str, metadata: dict[str, str] | None, start: bool = True) -> str:
    """A domain made outside this service (metadata None: without our <metadata>)."""
    spec = domain_xml.DomainSpec(
        name=name, domain_type="test", vcpus=1, memory_mib=64, kernel="/nonexistent/kernel",
        initrd="/nonexistent/initrd", cmdline="", disk="/nonexistent/disk", seed="/nonexistent/seed",
        console_log="/nonexistent/console", ssh_host="127.0.0.1", ssh_port=1, metadata=metadata or {})
    xml = domain_xml.build(spec)
    if metadata is None:
        xml = re.sub(r"<metadata>.*?</metadata>", "", xml, flags=re.DOTALL)
    with virsh() as conn:
        dom = conn.defineXML(xml)
        if start:
            dom.create()
    return name


def eventually(check, timeout: float = 5.0, interval: float = 0.05):
    """CHECK() is true within TIMEOUT seconds (returns its last value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# -- at start: orphans -------------------------------------------------------------------

def test_orphan_domains_are_removed_and_others_left(make_app):
    clock = FakeClock(T0)
    app, svc = ready(make_app, clock, events=False)
    kept = launch(app, svc)
    deleted, ended = launch(app, svc), launch(app, svc)
    with svc.db.session() as s:  # the row gone (purged), or terminated without its domain removed
        s.execute(delete(Instance).where(Instance.id == deleted))
        s.get(Instance, ended).state = "terminated"
    never_known = define_domain(f"computed-{new_id()}", {"id": "", "store": svc.provisioner.store})
    never_known_id = new_id()
    stray = define_domain(f"computed-{never_known_id}", {"id": never_known_id, "store": svc.provisioner.store},
                          start=False)
    other_id = new_id()
    others = define_domain(f"computed-{other_id}", {"id": other_id, "store": "other"})
    bare = define_domain(f"computed-{new_id()}", None)
    with virsh() as conn:
        builtin = {d.name() for d in conn.listAllDomains() if not d.name().startswith("computed-")}

    found = svc.reconciler.run(at_start=True)

    assert sorted(found.orphan_domains) == sorted([f"computed-{deleted}", f"computed-{ended}", stray])
    assert found.vanished == found.powered_off == found.resumed == []
    assert our_names(svc) == sorted([f"computed-{kept}", never_known, others, bare])
    assert svc.default_driver.state(others) == "running" and svc.default_driver.state(bare) == "running"
    assert domain_state(svc, kept) == "running" and row(svc, kept).state == "running"
    with virsh() as conn:
        assert builtin <= {d.name() for d in conn.listAllDomains()}  # the driver's own "test" domain
    assert not svc.reconciler.run(at_start=True)  # nothing left to do


def test_a_restart_removes_orphan_domains(make_app):
    clock = FakeClock(T0)
    app, svc = ready(make_app, clock)
    kept, orphan = launch(app, svc), launch(app, svc)
    other_id = new_id()
    others = define_domain(f"computed-{other_id}", {"id": other_id, "store": "other"})
    set_row(svc, orphan, state="terminated")
    _, svc2 = restart(make_app, app, clock, minutes=1)
    assert our_names(svc2) == sorted([f"computed-{kept}", others])
    assert row(svc2, kept).state == "running"


def test_orphan_directories_are_removed_and_other_names_left(make_app):
    clock = FakeClock(T0)
    app, svc = ready(make_app, clock, events=False)
    root = svc.settings.instances_dir
    live, ended = launch(app, svc), launch(app, svc)
    set_row(svc, ended, state="terminated")
    orphan = new_id()
    (root / orphan).mkdir()
    (root / orphan / "disk.qcow2").write_bytes(b"x")
    (root / ".probe").mkdir(exist_ok=True)
    (root / "notes").write_text("mine")
    (root / "i-abc").mkdir()          # not an instance id
    (root / new_id().upper()).mkdir()  # nor this (ids are lower-case hex)
    a_file = new_id()
    (root / a_file).write_text("a file, not an instance's directory")
    before = {p.name for p in root.iterdir()}
    assert {live, ended, orphan} <= before

    found = svc.reconciler.run(at_start=True)

    assert sorted(found.orphan_files) == sorted([orphan, ended])
    assert {p.name for p in root.iterdir()} == before - {orphan, ended}
    assert (root / live / "disk.qcow2").exists()
    assert (root / "notes").read_text() == "mine"


# -- at start: domains that vanished or stopped while nobody looked -----------------------

def test_a_vanished_domain_terminates_its_instance_at_detection(make_app):
    clock = FakeClock(T0)
    app, svc = ready(make_app, clock, events=False)
    iid, other = launch(app, svc), launch(app, svc)
    svc.close()  # the service is down
    with virsh() as conn:
        dom = conn.lookupByName(f"computed-{iid}")
        dom.destroy()
        dom.undefine()
    clock.advance(hours=2)
    detected = clock.now()
    app2, svc2 = ready(make_app, clock, events=False)

    inst = row(svc2, iid)
    assert inst.state == "terminated"
    assert (inst.state_reason_code, inst.state_reason_message) == VANISHED
    assert inst.state_reason_code == "Server.InternalError"
    assert inst.terminated_at == detected
    assert events(svc2, iid) == [("pending", T0), ("running", T0), ("terminated", detected)]
    response = app2.test_client().get(f"/v1/instances/{iid}").get_json()
    assert response["state"]["name"] == "terminated"
    assert response["state_reason"]["code"] == "Server.InternalError"
    assert row(svc2, other).state == "running" and domain_state(svc2, other) == "running"
    # its files are an orphan's now: the same pass removed them
    assert not (svc2.settings.instances_dir / iid).exists()
    assert (svc2.settings.instances_dir / other).is_dir()


def test_a_domain_shut_off_while_the_service_was_down_is_stopped(make_app):
    clock = FakeClock(T0)
    app, svc = ready(make_app, clock)
    iid = launch(app, svc)
    svc.close()
    with virsh() as conn:
        conn.lookupByName(f"computed-{iid}").destroy()
    clock.advance(minutes=30)
    app2, svc2 = ready(make_app, clock)

    inst = row(svc2, iid)
    assert inst.state == "stopped"
    assert (inst.state_reason_code, inst.state_reason_message) == SELF_SHUTDOWN
    assert inst.state_reason_code == "Client.InstanceInitiatedShutdown"
    assert events(svc2, iid)[-1] == ("stopped", T0 + dt.timedelta(minutes=30))
    assert domain_state(svc2, iid) == "shutoff"  # kept, to start again
    client = app2.test_client()
    assert client.post(f"/v1/instances/{iid}/start").status_code == 202
    assert svc2.worker.idle(60)
    assert row(svc2, iid).state == "running" and domain_state(svc2, iid) == "running"


# -- at start: interrupted work ------------------------------------------------------------

def test_interrupted_stop_is_carried_out(make_app):
    app, svc = ready(make_app, FakeClock(T0), events=False)
    iid = launch(app, svc)
    set_row(svc, iid, state="stopping", state_changed_at=BEFORE_START)  # stop.committed
    found = svc.reconciler.run(at_start=True)
    assert svc.worker.idle(60)
    assert found.resumed == [iid]
    inst = row(svc, iid)
    assert inst.state == "stopped"
    assert (inst.state_reason_code, inst.state_reason_message) == USER_STOP
    assert domain_state(svc, iid) == "shutoff"


def test_interrupted_stop_whose_guest_is_already_off(make_app):
    app, svc = ready(make_app, FakeClock(T0), events=False)
    iid = launch(app, svc)
    svc.provisioner.default_driver.power_off(f"computed-{iid}")  # stop.off
    set_row(svc, iid, state="stopping", state_changed_at=BEFORE_START)
    svc.reconciler.run(at_start=True)
    assert svc.worker.idle(60)
    assert row(svc, iid).state == "stopped" and domain_state(svc, iid) == "shutoff"


@pytest.mark.parametrize("point", ["terminate.committed", "terminate.domain", "terminate.files"])
def test_interrupted_terminate_is_carried_out(make_app, point):
    app, svc = ready(make_app, FakeClock(T0), events=False)
    iid = launch(app, svc)
    if point != "terminate.committed":
        svc.provisioner.delete_domain(row(svc, iid))
    if point == "terminate.files":
        shutil.rmtree(svc.settings.instances_dir / iid)
    set_row(svc, iid, state="shutting-down", state_changed_at=BEFORE_START)
    found = svc.reconciler.run(at_start=True)
    assert svc.worker.idle(60)
    assert found.resumed == [iid] and found.vanished == []
    inst = row(svc, iid)
    assert inst.state == "terminated"
    assert (inst.state_reason_code, inst.state_reason_message) == USER_TERMINATE
    assert domain_state(svc, iid) is None
    assert not (svc.settings.instances_dir / iid).exists()


def test_a_launch_that_never_began_is_launched(make_app, monkeypatch):
    app, svc = ready(make_app, FakeClock(T0), events=False)
    iid = launch_committed_only(app, svc, monkeypatch)
    set_row(svc, iid, state_changed_at=BEFORE_START)
    assert domain_state(svc, iid) is None
    found = svc.reconciler.run(at_start=True)
    assert svc.worker.idle(60)
    assert found.resumed == [iid]
    assert row(svc, iid).state == "running"
    assert our_names(svc) == [f"computed-{iid}"] and domain_state(svc, iid) == "running"
    assert [state for state, _ in events(svc, iid)] == ["pending", "running"]


@pytest.mark.parametrize("point", ["launch.directory", "launch.defined"])
def test_a_launch_cut_short_is_rolled_back_and_begun_again(make_app, monkeypatch, point):
    app, svc = ready(make_app, FakeClock(T0), events=False)
    iid = launch_committed_only(app, svc, monkeypatch)
    if point == "launch.directory":
        (svc.settings.instances_dir / iid).mkdir()
    else:
        svc.provisioner.create(row(svc, iid), Undo())
        svc.provisioner.default_driver.power_off(f"computed-{iid}")  # defined, never started
    set_row(svc, iid, state_changed_at=BEFORE_START)
    svc.reconciler.run(at_start=True)
    assert svc.worker.idle(60)
    assert row(svc, iid).state == "running"
    assert our_names(svc) == [f"computed-{iid}"] and domain_state(svc, iid) == "running"
    assert (svc.settings.instances_dir / iid / "disk.qcow2").exists()


def test_a_launch_whose_domain_runs_is_completed_without_a_second_domain(make_app, monkeypatch):
    app, svc = ready(make_app, FakeClock(T0), events=False)
    iid = launch_committed_only(app, svc, monkeypatch)
    svc.provisioner.create(row(svc, iid), Undo())  # launch.started: it runs; the store says pending
    set_row(svc, iid, state_changed_at=BEFORE_START)
    running_as = domain_id(iid)
    found = svc.reconciler.run(at_start=True)
    assert svc.worker.idle(60)
    assert found.resumed == [iid]
    assert row(svc, iid).state == "running"
    assert our_names(svc) == [f"computed-{iid}"]
    assert domain_id(iid) == running_as  # the same run of the same domain: not relaunched
    assert [state for state, _ in events(svc, iid)] == ["pending", "running"]


@pytest.mark.parametrize("point", ["start.committed", "start.started"])
def test_an_interrupted_start_is_carried_out(make_app, point):
    clock = FakeClock(T0)
    app, svc = ready(make_app, clock, events=False)
    iid = launch(app, svc)
    client = app.test_client()
    assert client.post(f"/v1/instances/{iid}/stop").status_code == 202
    assert svc.worker.idle(60) and row(svc, iid).state == "stopped"
    if point == "start.started":
        svc.provisioner.default_driver.start(f"computed-{iid}")
    set_row(svc, iid, state="pending", state_changed_at=BEFORE_START)
    found = svc.reconciler.run(at_start=True)
    assert svc.worker.idle(60)
    assert found.resumed == [iid]
    assert row(svc, iid).state == "running"
    assert our_names(svc) == [f"computed-{iid}"] and domain_state(svc, iid) == "running"
    assert (svc.settings.instances_dir / iid / "disk.qcow2").exists()  # started, not relaunched


def test_a_restart_finishes_what_the_last_run_left(make_app, monkeypatch):
    """The same situations, left by a service that went down, reconciled by the next one's
    housekeeping on its own."""
    clock = FakeClock(T0)
    app, svc = ready(make_app, clock)
    stopping, ending, idle = launch(app, svc), launch(app, svc), launch(app, svc)
    never = launch_committed_only(app, svc, monkeypatch)
    set_row(svc, stopping, state="stopping")
    set_row(svc, ending, state="shutting-down")
    app2, svc2 = restart(make_app, app, clock, minutes=1)
    assert {i: row(svc2, i).state for i in (stopping, ending, idle, never)} == {
        stopping: "stopped", ending: "terminated", idle: "running", never: "running"}
    assert our_names(svc2) == sorted(f"computed-{i}" for i in (stopping, idle, never))
    assert {i: domain_state(svc2, i) for i in (stopping, idle, never)} == {
        stopping: "shutoff", idle: "running", never: "running"}
    assert app2.test_client().get("/health").get_json()["reconciled"] is True


# -- what reconciliation leaves alone ------------------------------------------------------

def test_work_in_flight_is_left_alone(make_app):
    app, svc = ready(make_app, FakeClock(T0), events=False)
    iid = launch(app, svc)
    set_row(svc, iid, state="stopping", state_changed_at=BEFORE_START)
    orphan = new_id()  # a launch under way: directory and domain before its row is seen
    (svc.settings.instances_dir / orphan).mkdir()
    define_domain(f"computed-{orphan}", {"id": orphan, "store": svc.provisioner.store})
    release = threading.Event()
    try:
        svc.worker.submit(iid, lambda: release.wait(10), "work in flight")
        svc.worker.submit(orphan, lambda: release.wait(10), "work in flight")
        assert svc.worker.busy(iid) and svc.worker.busy(orphan)
        assert svc.reconciler.run(at_start=True) == Findings()
        assert row(svc, iid).state == "stopping" and domain_state(svc, iid) == "running"
        assert domain_state(svc, orphan) == "running" and (svc.settings.instances_dir / orphan).is_dir()
    finally:
        release.set()
    assert svc.worker.idle(60)
    found = svc.reconciler.run(at_start=True)  # once the work is done, they are reconciled
    assert svc.worker.idle(60)
    assert found.resumed == [iid] and found.orphan_domains == [f"computed-{orphan}"]
    assert found.orphan_files == [orphan]
    assert row(svc, iid).state == "stopped"


def test_a_periodic_pass_waits_out_the_grace_period(make_app):
    clock = FakeClock(T0)
    app, svc = ready(make_app, clock, events=False)
    clock.advance(hours=1)
    iid = launch(app, svc)
    set_row(svc, iid, state="stopping", state_changed_at=clock.now() - GRACE / 2)
    assert svc.reconciler.run(at_start=False) == Findings()
    assert svc.worker.idle(60)
    assert row(svc, iid).state == "stopping" and domain_state(svc, iid) == "running"
    clock.advance(seconds=GRACE.total_seconds() / 2 + 1)
    assert svc.reconciler.run(at_start=False).resumed == [iid]
    assert svc.worker.idle(60)
    assert row(svc, iid).state == "stopped"


def test_an_at_start_pass_leaves_what_changed_since_the_start(make_app):
    """A request served after the start (its state changed since) belongs to this run."""
    clock = FakeClock(T0)
    app, svc = ready(make_app, clock, events=False)
    clock.advance(seconds=1)
    iid = launch(app, svc)
    set_row(svc, iid, state="stopping")  # changed at T0 + 1 s, after the start
    clock.advance(minutes=10)  # long enough ago for a periodic pass
    assert svc.reconciler.run(at_start=True) == Findings()
    assert row(svc, iid).state == "stopping"


def test_unreachable_libvirt_changes_nothing_and_health_says_so(settings, image, make_app):
    app, svc = ready(make_app, FakeClock(T0), events=False)
    assert app.test_client().get("/health").get_json()["reconciled"] is True
    orphan = new_id()
    (settings.instances_dir / orphan).mkdir(parents=True)

    with svc.db.session() as s:  # the store's one host moves where nothing answers
        s.get(Host, "local").uri = "test:///no/such/file.xml"
    down = create_app(settings, clock=FakeClock(T0))
    svc2 = down.extensions["computed"]
    try:
        with pytest.raises(ServiceUnavailable):
            svc2.reconciler.run(at_start=True)
        with pytest.raises(ServiceUnavailable):
            svc2.reconciler.run()
        assert (settings.instances_dir / orphan).is_dir()
        health = down.test_client().get("/health")
        assert health.status_code == 200
        assert health.get_json()["reconciled"] is False
        assert not svc2.reconciled.wait(0.5)  # its housekeeping keeps waiting for libvirt
    finally:
        svc2.close()


# -- lifecycle events ----------------------------------------------------------------------

@pytest.mark.parametrize("how, reason", [("destroy", DESTROYED_OUTSIDE), ("shutdown", SELF_SHUTDOWN)])
def test_a_guest_that_stops_by_itself_is_stopped_at_once(make_app, how, reason):
    clock = FakeClock(T0)
    app, svc = ready(make_app, clock)
    iid = launch(app, svc)
    calls = []
    forward = svc.default_driver.on_guest_stopped
    svc.default_driver.on_guest_stopped = lambda instance_id, what: (calls.append((instance_id, what)),
                                                                     forward(instance_id, what))
    clock.advance(minutes=42)
    with virsh() as conn:
        getattr(conn.lookupByName(f"computed-{iid}"), how)()
    assert eventually(lambda: row(svc, iid).state == "stopped"), "no lifecycle event reached the service"
    assert calls == [(iid, {"destroy": "destroyed", "shutdown": "shutdown"}[how])]
    assert svc.worker.idle(60)
    inst = row(svc, iid)
    assert (inst.state_reason_code, inst.state_reason_message) == reason
    assert events(svc, iid) == [("pending", T0), ("running", T0), ("stopped", T0 + dt.timedelta(minutes=42))]
    # and it starts again as any stopped instance
    assert app.test_client().post(f"/v1/instances/{iid}/start").status_code == 202
    assert svc.worker.idle(60)
    assert row(svc, iid).state == "running" and domain_state(svc, iid) == "running"


def test_a_stop_through_the_api_keeps_the_users_reason(make_app):
    clock = FakeClock(T0)
    app, svc = ready(make_app, clock)
    iid = launch(app, svc)
    clock.advance(minutes=5)
    assert app.test_client().post(f"/v1/instances/{iid}/stop").status_code == 202
    assert svc.worker.idle(60)
    time.sleep(0.3)  # let the stop's own lifecycle event arrive, if it is late
    assert svc.worker.idle(60)
    inst = row(svc, iid)
    assert inst.state == "stopped"
    assert (inst.state_reason_code, inst.state_reason_message) == USER_STOP
    assert inst.state_reason_code == "Client.UserInitiatedShutdown"
    assert [state for state, _ in events(svc, iid)] == ["pending", "running", "stopping", "stopped"]
    svc._guest_stopped(iid, "destroyed")  # an event that comes late changes nothing either
    assert svc.worker.idle(60)
    assert (row(svc, iid).state, row(svc, iid).state_reason_code) == ("stopped", "Client.UserInitiatedShutdown")
    assert len(events(svc, iid)) == 4


@pytest.mark.parametrize("how, reason", [("shutdown", SELF_SHUTDOWN), ("destroyed", DESTROYED_OUTSIDE),
                                         ("crashed", CRASHED), ("failed", CRASHED)])
def test_how_a_guest_stopped_gives_the_reason(make_app, how, reason):
    clock = FakeClock(T0)
    app, svc = ready(make_app, clock, events=False)  # the event is delivered by hand
    iid = launch(app, svc)
    svc.provisioner.default_driver.power_off(f"computed-{iid}")
    clock.advance(minutes=1)
    svc._guest_stopped(iid, how)
    assert svc.worker.idle(60)
    inst = row(svc, iid)
    assert (inst.state, inst.state_reason_code, inst.state_reason_message) == ("stopped", *reason)
    assert events(svc, iid)[-1] == ("stopped", T0 + dt.timedelta(minutes=1))


def test_a_stale_event_for_a_guest_running_again_is_ignored(make_app):
    app, svc = ready(make_app, FakeClock(T0), events=False)
    iid = launch(app, svc)
    svc._guest_stopped(iid, "shutdown")  # e.g. it was started again before the event was handled
    assert svc.worker.idle(60)
    assert row(svc, iid).state == "running" and len(events(svc, iid)) == 2


def test_events_for_domains_not_in_this_store_are_ignored(make_app):
    app, svc = ready(make_app, FakeClock(T0))
    iid = launch(app, svc)
    calls = []
    forward = svc.default_driver.on_guest_stopped
    svc.default_driver.on_guest_stopped = lambda instance_id, what: (calls.append((instance_id, what)),
                                                                     forward(instance_id, what))
    other_id = new_id()
    others = define_domain(f"computed-{other_id}", {"id": other_id, "store": "other"})
    before = events(svc, iid)
    with virsh() as conn:
        conn.lookupByName(others).destroy()
        test = conn.lookupByName("test")  # the driver's own domain: no computed- name at all
        if test.isActive():
            test.destroy()
            test.create()
    assert eventually(lambda: calls), "the event did not arrive"
    assert svc.worker.idle(60)
    assert calls == [(other_id, "destroyed")]  # it reached the service, which found nothing of its own
    assert row(svc, other_id) is None
    assert row(svc, iid).state == "running" and events(svc, iid) == before
    assert svc.default_driver.state(others) == "shutoff"


def test_a_guest_stopping_during_work_in_flight_is_left_to_that_work(make_app):
    clock = FakeClock(T0)
    app, svc = ready(make_app, clock)
    iid = launch(app, svc)
    release = threading.Event()
    calls = []
    forward = svc.default_driver.on_guest_stopped
    svc.default_driver.on_guest_stopped = lambda instance_id, what: (calls.append(instance_id),
                                                                     forward(instance_id, what))
    try:
        svc.worker.submit(iid, lambda: release.wait(10), "work in flight")
        with virsh() as conn:
            conn.lookupByName(f"computed-{iid}").destroy()
        assert eventually(lambda: calls)
    finally:
        release.set()
    assert svc.worker.idle(60)
    assert row(svc, iid).state == "running"  # the work owned it; reconciliation will see it off
    assert svc.reconciler.run().powered_off == []  # within the grace period
    clock.advance(seconds=GRACE.total_seconds() + 1)
    assert svc.reconciler.run().powered_off == [iid]
    assert row(svc, iid).state == "stopped"


# -- fault points ---------------------------------------------------------------------------

def test_unknown_fault_points_are_refused_naming_the_known_ones():
    with pytest.raises(ValueError) as raised:
        Faults(("nope",))
    message = str(raised.value)
    assert "nope" in message
    assert all(point in message for point in POINTS)


def test_no_fault_points_make_every_point_a_no_op():
    faults = Faults(())
    for point in POINTS:
        faults.point(point)  # still here
    assert Faults().points == frozenset()


def test_every_fault_point_is_reached_in_the_code():
    """Each name in POINTS is passed to point() somewhere in computed/, and no point() call
    names one that is not in POINTS."""
    called = set()
    for path in Path(computed.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "point"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                called.add(node.args[0].value)
    assert called == set(POINTS)
    assert len(POINTS) == len(set(POINTS))


# -- domains made before they carried their store's id -------------------------------------

def legacy_domain(iid: str, start: bool) -> None:
    """Redefine an instance's domain as an older version of the service made it: our
    <metadata>, without the store's id."""
    with virsh() as conn:
        dom = conn.lookupByName(f"computed-{iid}")
        xml = re.sub(r"<computed:store>.*?</computed:store>", "", dom.XMLDesc(0))
        assert "computed:store" not in xml and f"<computed:id>{iid}</computed:id>" in xml
        if dom.isActive():
            dom.destroy()
        dom.undefine()
        dom = conn.defineXML(xml)
        if start:
            dom.create()


def test_instances_whose_domains_carry_no_store_id_are_not_taken_for_vanished(make_app):
    clock = FakeClock(T0)
    app, svc = ready(make_app, clock, events=False)
    running, stopped, off = launch(app, svc), launch(app, svc), launch(app, svc)
    assert app.test_client().post(f"/v1/instances/{stopped}/stop").status_code == 202
    assert svc.worker.idle(60)
    svc.close()
    legacy_domain(running, start=True)
    legacy_domain(stopped, start=False)
    legacy_domain(off, start=False)  # a running instance whose guest went off meanwhile
    _, svc2 = restart(make_app, app, clock, minutes=1)
    assert {i: row(svc2, i).state for i in (running, stopped, off)} == {
        running: "running", stopped: "stopped", off: "stopped"}
    assert (row(svc2, off).state_reason_code, row(svc2, off).state_reason_message) == SELF_SHUTDOWN
    assert {i: domain_state(svc2, i) for i in (running, stopped, off)} == {
        running: "running", stopped: "shutoff", off: "shutoff"}
    assert not svc2.reconciler.run(at_start=True)
    assert all((svc2.settings.instances_dir / i / "disk.qcow2").exists() for i in (running, stopped, off))


def test_a_domain_undefined_while_the_domains_are_listed_is_skipped(make_app, monkeypatch):
    """A terminate may undefine a domain between the listing and the questions about it."""
    app, svc = ready(make_app, FakeClock(T0), events=False)
    iid = launch(app, svc)
    gone_id = new_id()
    gone = define_domain(f"computed-{gone_id}", {"id": gone_id, "store": svc.provisioner.store})
    conn = svc.default_driver.conn()
    real = conn.lookupByName(gone)
    meta = real.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, domain_xml.METADATA_NS)

    class Undefined:  # its metadata was read; it was undefined before its state was asked
        def name(self):
            return gone

        def metadata(self, *args):
            return meta

        def state(self):
            return real.state()

    listed = [d for d in conn.listAllDomains() if d.name() != gone] + [Undefined()]
    real.destroy()
    real.undefine()
    with monkeypatch.context() as m:  # (undone before the fixtures' teardown lists the domains)
        m.setattr(conn, "listAllDomains", lambda *args: listed)
        assert svc.default_driver.our_domains(svc.provisioner.store) == {iid: (f"computed-{iid}", "running", "local")}
        assert not svc.reconciler.run(at_start=True)
    assert svc.default_driver.conn() is conn  # no reconnection for it
