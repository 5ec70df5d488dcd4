"""Several service processes on one store (computed/processes.py): reconciliation in one
leaves alone the work of another that is alive, and takes over the work of one that is
gone (shut down cleanly, heartbeat stale, or its pid no longer running on this machine).

Two services in one test process share libvirt's test:///default, as two processes share
one libvirtd."""

from __future__ import annotations

import datetime as dt
import os
import subprocess

from sqlalchemy import select, update

from computed.clock import FakeClock
from computed.store.models import ServiceProcess
from computed.store.processes import STALE

from tests.unit.compute.test_reconcile import T0, domain_state, launch, ready, row, set_row

LONG_AGO = T0 - dt.timedelta(hours=1)  # past reconciliation's grace period


def two_services(make_app, clock):
    app_a, a = ready(make_app, clock, events=False)
    app_b, b = ready(make_app, clock, events=False)
    assert a.processes.id != b.processes.id
    return app_a, a, app_b, b


def interrupted_stop(app, svc) -> str:
    """An instance of SVC's that its process was stopping, long ago (as a slow stop, or
    one in a long queue, looks to another process)."""
    iid = launch(app, svc)
    set_row(svc, iid, state="stopping", state_changed_at=LONG_AGO)
    assert row(svc, iid).handled_by == svc.processes.id
    return iid


def test_a_live_process_keeps_its_work(make_app):
    clock = FakeClock(T0)
    app_a, a, _, b = two_services(make_app, clock)
    iid = interrupted_stop(app_a, a)

    assert iid not in b.reconciler.run().resumed
    assert iid not in b.reconciler.run(at_start=True).resumed
    assert b.worker.idle(60)
    assert row(b, iid).state == "stopping" and row(b, iid).handled_by == a.processes.id
    assert domain_state(b, iid) == "running"  # nobody touched the guest

    # its own process does carry it out
    assert iid in a.reconciler.run().resumed
    assert a.worker.idle(60)
    assert row(a, iid).state == "stopped"


def test_the_work_of_a_process_that_shut_down_is_taken_over(make_app):
    clock = FakeClock(T0)
    app_a, a, _, b = two_services(make_app, clock)
    iid = interrupted_stop(app_a, a)
    gone = a.processes.id
    a.close()
    with b.db.reading() as s:
        assert s.get(ServiceProcess, gone) is None  # a clean shutdown unregisters

    assert iid in b.reconciler.run().resumed
    assert b.worker.idle(60)
    inst = row(b, iid)
    assert inst.state == "stopped" and inst.handled_by == b.processes.id


def test_a_stale_heartbeat_means_the_process_is_gone(make_app):
    clock = FakeClock(T0)
    app_a, a, _, b = two_services(make_app, clock)
    iid = interrupted_stop(app_a, a)
    a.housekeeping.stop()  # its housekeeping (and heartbeat) stops, as a hung process's: no clean shutdown

    with b.db.session() as s:  # its last heartbeat, just within the limit: still alive
        s.execute(update(ServiceProcess).where(ServiceProcess.id == a.processes.id)
                  .values(heartbeat_at=dt.datetime.now(dt.UTC) - STALE + dt.timedelta(seconds=5)))
    assert iid not in b.reconciler.run().resumed

    with b.db.session() as s:
        s.execute(update(ServiceProcess).where(ServiceProcess.id == a.processes.id)
                  .values(heartbeat_at=dt.datetime.now(dt.UTC) - STALE - dt.timedelta(seconds=1)))
    assert a.processes.id not in b.processes.alive()
    assert iid in b.reconciler.run().resumed
    assert b.worker.idle(60)
    assert row(b, iid).state == "stopped"


def test_a_process_whose_pid_is_gone_on_this_machine_is_dead_at_once(make_app):
    clock = FakeClock(T0)
    app_a, a, _, b = two_services(make_app, clock)
    iid = interrupted_stop(app_a, a)
    a.housekeeping.stop()
    dead_pid = _a_pid_that_is_not_running()
    with b.db.session() as s:  # a fresh heartbeat, but from a pid that no longer runs (SIGKILLed)
        s.execute(update(ServiceProcess).where(ServiceProcess.id == a.processes.id)
                  .values(pid=dead_pid, heartbeat_at=dt.datetime.now(dt.UTC)))
    assert a.processes.id not in b.processes.alive()
    assert iid in b.reconciler.run().resumed
    assert b.worker.idle(60)
    assert row(b, iid).state == "stopped"


def test_another_processes_guest_event_is_left_to_it(make_app):
    clock = FakeClock(T0)
    app_a, a, _, b = two_services(make_app, clock)
    iid = launch(app_a, a)
    a.default_driver.power_off(f"computed-{iid}")  # the guest went off; both processes hear of it
    b.lifecycle.guest_stopped(iid, ("Client.InstanceInitiatedShutdown", "Instance initiated shutdown"))
    assert b.worker.idle(60)
    assert row(b, iid).state == "running"  # b leaves a's instance to a
    a.lifecycle.guest_stopped(iid, ("Client.InstanceInitiatedShutdown", "Instance initiated shutdown"))
    assert a.worker.idle(60)
    assert row(a, iid).state == "stopped"


def test_a_request_makes_its_process_the_handler(make_app):
    clock = FakeClock(T0)
    app_a, a, app_b, b = two_services(make_app, clock)
    iid = launch(app_a, a)
    assert row(a, iid).handled_by == a.processes.id
    assert app_b.test_client().post(f"/v1/instances/{iid}/stop").status_code == 202
    assert b.worker.idle(60)
    inst = row(b, iid)
    assert inst.state == "stopped" and inst.handled_by == b.processes.id


def test_the_heartbeat_registers_again_a_process_taken_for_dead(make_app):
    _, a = ready(make_app, FakeClock(T0), events=False)
    with a.db.session() as s:
        s.execute(ServiceProcess.__table__.delete().where(ServiceProcess.id == a.processes.id))
    a.processes.heartbeat()
    with a.db.reading() as s:
        assert s.scalar(select(ServiceProcess.pid).where(ServiceProcess.id == a.processes.id)) == os.getpid()


def _a_pid_that_is_not_running() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
