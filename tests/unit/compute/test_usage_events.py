"""Usage events: one per state change, in the same transaction, append-only, carrying the
price at launch; they outlive the purge of terminated instances."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from computed.clock import FakeClock
from computed.store.models import Instance, UsageEvent

T0 = dt.datetime(2026, 3, 1, 10, 0, tzinfo=dt.UTC)


def events(svc, instance_id=None):
    with svc.db.session() as s:
        q = select(UsageEvent).order_by(UsageEvent.id)
        if instance_id:
            q = q.where(UsageEvent.instance_id == instance_id)
        return list(s.scalars(q))


def test_every_state_change_is_an_event_with_the_clock_time(make_app, wait):
    clock = FakeClock(T0)
    app = make_app(clock=clock)
    client, svc = app.test_client(), app.extensions["computed"]
    iid = client.post("/v1/instances", json={"size": "t3.micro", "tags": {"team": "a"}}).get_json()["instances"][0]["id"]
    wait(svc)
    clock.advance(minutes=30)
    client.post(f"/v1/instances/{iid}/stop")
    wait(svc)
    clock.advance(minutes=10)
    client.post(f"/v1/instances/{iid}/start")
    wait(svc)
    clock.advance(hours=2)
    client.delete(f"/v1/instances/{iid}")
    wait(svc)
    got = [(e.state, e.at) for e in events(svc, iid)]
    assert got == [
        ("pending", T0), ("running", T0),
        ("stopping", T0 + dt.timedelta(minutes=30)), ("stopped", T0 + dt.timedelta(minutes=30)),
        ("pending", T0 + dt.timedelta(minutes=40)), ("running", T0 + dt.timedelta(minutes=40)),
        ("shutting-down", T0 + dt.timedelta(minutes=160)), ("terminated", T0 + dt.timedelta(minutes=160)),
    ]
    ids = [e.id for e in events(svc, iid)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert {(e.size, e.image, e.price_per_hour, e.currency, e.owner) for e in events(svc, iid)} == {
        ("t3.micro", "debian-12-podman", "0.0104", "USD", app.config["TEST_CALLER"].account_id)}


def test_the_event_and_the_state_change_commit_together(app, wait):
    svc = app.extensions["computed"]
    client = app.test_client()
    iid = client.post("/v1/instances", json={"size": "t3.nano"}).get_json()["instances"][0]["id"]
    wait(svc)
    before = len(events(svc, iid))

    class Boom(Exception):
        pass

    try:
        with svc.db.session() as s:
            from computed.compute.state import set_state
            set_state(s.get(Instance, iid), "stopping", None, svc.clock.now())
            raise Boom
    except Boom:
        pass
    assert len(events(svc, iid)) == before  # rolled back with the state change
    with svc.db.session() as s:
        assert s.get(Instance, iid).state == "running"


def test_events_keep_the_launch_price_and_outlive_the_purge(make_app, wait):
    clock = FakeClock(T0)
    app = make_app(clock=clock, terminated_retention=60)
    client, svc = app.test_client(), app.extensions["computed"]
    iid = client.post("/v1/instances", json={"size": "t3.small"}).get_json()["instances"][0]["id"]
    wait(svc)
    client.delete(f"/v1/instances/{iid}")
    wait(svc)
    clock.advance(hours=2)
    assert client.get(f"/v1/instances/{iid}").status_code == 404  # purged
    assert [e.state for e in events(svc, iid)][-1] == "terminated"
    assert all(e.price_per_hour == "0.0208" for e in events(svc, iid))
