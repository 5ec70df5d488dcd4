"""The lifecycle's own rules (``computed.compute.lifecycle``), on instances of the service on
libvirt's test driver: ``set_state`` is the one place a state changes (its time and reason
with it, a usage event in the same transaction, readiness cleared off running, the SSH port
and the forwarded ports given back at terminated), and ``Lifecycle.mine`` says whether this
process handles an instance (it made the last change, or whoever did is gone)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select, update

from computed.compute.state import USER_STOP, set_state
from computed.store.models import Instance, PortForward, ServiceProcess, UsageEvent
from computed.store.processes import STALE, Processes

T0 = dt.datetime(2026, 3, 1, 10, 0, tzinfo=dt.UTC)


def running(launch, wait, **body) -> str:
    instance_id = launch(**body)["instances"][0]["id"]
    wait()
    return instance_id


def last_event(service, instance_id: str) -> UsageEvent:
    with service.db.reading() as s:
        return s.scalars(select(UsageEvent).where(UsageEvent.instance_id == instance_id)
                         .order_by(UsageEvent.id.desc()).limit(1)).one()


def count_events(service, instance_id: str) -> int:
    with service.db.reading() as s:
        return s.scalar(select(func.count()).select_from(UsageEvent).where(UsageEvent.instance_id == instance_id))


def test_the_state_its_time_its_reason_and_its_event(service, launch, wait):
    iid = running(launch, wait, tags={"team": "a"})
    before = count_events(service, iid)
    with service.db.session() as s:
        inst = s.get(Instance, iid)
        set_state(inst, "stopping", USER_STOP, T0)
        # the event is added to the session the state changed in: one commit writes both
        [event] = [o for o in s.new if isinstance(o, UsageEvent)]
        assert (event.instance_id, event.state, event.at) == (iid, "stopping", T0)
    with service.db.reading() as s:
        inst = s.get(Instance, iid)
        assert (inst.state, inst.state_changed_at) == ("stopping", T0)
        assert (inst.state_reason_code, inst.state_reason_message) == USER_STOP
        assert inst.terminated_at is None
    assert count_events(service, iid) == before + 1
    event = last_event(service, iid)
    assert (event.state, event.at, event.size, event.image, event.owner, event.tags) == (
        "stopping", T0, inst.size, inst.image, inst.owner, '{"team": "a"}')
    assert (event.price_per_hour, event.currency) == (inst.price_per_hour, inst.currency)

    # no reason: none kept from before
    with service.db.session() as s:
        set_state(s.get(Instance, iid), "stopped", None, T0 + dt.timedelta(seconds=5))
    with service.db.reading() as s:
        inst = s.get(Instance, iid)
        assert (inst.state, inst.state_changed_at) == ("stopped", T0 + dt.timedelta(seconds=5))
        assert (inst.state_reason_code, inst.state_reason_message) == (None, None)
    assert last_event(service, iid).state == "stopped"


def test_readiness_is_cleared_off_running(service, launch, wait, case):
    iid = running(launch, wait)
    with service.db.session() as s:
        inst = s.get(Instance, iid)
        inst.ready_ssh = inst.ready_engine = True
        set_state(inst, "running", None, T0)
        assert inst.ready_ssh and inst.ready_engine  # running again keeps what was found
        for state in ("stopping", "stopped", "pending", "shutting-down", "terminated"):
            with case(state):
                inst.ready_ssh = inst.ready_engine = True
                set_state(inst, state, None, T0)
                assert not inst.ready_ssh and not inst.ready_engine
    with service.db.reading() as s:
        inst = s.get(Instance, iid)
        assert (inst.state, inst.ready_ssh, inst.ready_engine) == ("terminated", False, False)


def test_terminated_gives_back_the_ssh_port_and_the_forwarded_ports(service, launch, wait):
    iid = running(launch, wait)
    with service.db.session() as s:
        inst = s.get(Instance, iid)
        ssh_port = inst.ssh_port
        assert ssh_port is not None
        s.add_all([PortForward(instance_id=iid, host_address=inst.ssh_host, host_port=port, guest_port=guest)
                   for port, guest in ((ssh_port + 1, 80), (ssh_port + 2, 443))])

    def ports() -> int:
        with service.db.reading() as s:
            return s.scalar(select(func.count()).select_from(PortForward).where(PortForward.instance_id == iid))

    with service.db.session() as s:
        set_state(s.get(Instance, iid), "stopped", USER_STOP, T0)
    with service.db.reading() as s:
        assert s.get(Instance, iid).ssh_port == ssh_port  # kept through a stop
    assert ports() == 2

    at = T0 + dt.timedelta(minutes=1)
    with service.db.session() as s:
        set_state(s.get(Instance, iid), "terminated", None, at)
    with service.db.reading() as s:
        inst = s.get(Instance, iid)
        assert (inst.state, inst.terminated_at, inst.ssh_port) == ("terminated", at, None)
        assert inst.ports == []
    assert ports() == 0


def test_mine(service):
    lifecycle = service.lifecycle
    assert lifecycle.mine(Instance(handled_by=None))  # nobody's: whoever gets to it
    assert lifecycle.mine(Instance(handled_by=service.processes.id))

    other = Processes(service.db)  # another service process on the store, alive
    assert other.id in service.processes.alive()
    assert not lifecycle.mine(Instance(handled_by=other.id))
    with service.db.session() as s:  # its heartbeat stale: taken for dead
        s.execute(update(ServiceProcess).where(ServiceProcess.id == other.id)
                  .values(heartbeat_at=dt.datetime.now(dt.UTC) - 2 * STALE))
    assert lifecycle.mine(Instance(handled_by=other.id))
    other.heartbeat()  # back
    assert not lifecycle.mine(Instance(handled_by=other.id))
    other.close()  # shut down cleanly
    assert lifecycle.mine(Instance(handled_by=other.id))
    assert lifecycle.mine(Instance(handled_by="0123456789abcdef"))  # never heard of
