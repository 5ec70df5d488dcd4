"""Metering across a restart of the service: usage events written by one Service and then
by a second one on the same database (libvirt's test driver, a FakeClock) form one
history, and billing it gives exactly the two running stretches."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

import pytest
from sqlalchemy import select

from computed.billing import metering
from computed.clock import FakeClock
from computed.store.models import UsageEvent

T0 = dt.datetime(2026, 3, 1, 10, 15, 0, 250_000, tzinfo=dt.UTC)
PRICE = Decimal("0.0104")  # t3.micro
RATE = metering.per_second_rate(PRICE)


def usage_rows(svc) -> list[UsageEvent]:
    with svc.db.session() as s:
        return list(s.scalars(select(UsageEvent).order_by(UsageEvent.id)))


def hour(h: int) -> dt.datetime:
    return dt.datetime(2026, 3, 1, h, tzinfo=dt.UTC)


def test_events_and_bill_survive_a_restart(make_app, wait):
    clock = FakeClock(T0)
    first = make_app(clock=clock)
    client, svc = first.test_client(), first.extensions["computed"]
    response = client.post("/v1/instances", json={"size": "t3.micro", "tags": {"team": "a"}})
    assert response.status_code == 202, response.get_json()
    iid = response.get_json()["instances"][0]["id"]
    wait(svc)
    clock.advance(minutes=50)                       # 11:05:00.25
    assert client.post(f"/v1/instances/{iid}/stop").status_code == 202
    wait(svc)
    assert client.get(f"/v1/instances/{iid}").get_json()["state"]["name"] == "stopped"

    # a second service on the same settings, hence the same database file
    clock.advance(minutes=10)                       # 11:15:00.25
    second = make_app(clock=clock)
    client2, svc2 = second.test_client(), second.extensions["computed"]
    assert svc2.settings.database_url == svc.settings.database_url
    assert client2.post(f"/v1/instances/{iid}/start").status_code == 202
    wait(svc2)
    assert client2.get(f"/v1/instances/{iid}").get_json()["state"]["name"] == "running"
    clock.advance(hours=2, minutes=30, seconds=30)  # 13:45:30.25
    assert client2.delete(f"/v1/instances/{iid}").status_code in (200, 202)
    wait(svc2)
    assert client2.get(f"/v1/instances/{iid}").get_json()["state"]["name"] == "terminated"

    rows = usage_rows(svc2)
    assert [(r.id, r.state) for r in usage_rows(svc)] == [(r.id, r.state) for r in rows]  # one store
    minutes = lambda m: T0 + dt.timedelta(minutes=m)
    assert [(r.instance_id, r.state, r.at) for r in rows] == [
        (iid, "pending", T0), (iid, "running", T0),
        (iid, "stopping", minutes(50)), (iid, "stopped", minutes(50)),
        (iid, "pending", minutes(60)), (iid, "running", minutes(60)),
        (iid, "shutting-down", minutes(210.5)), (iid, "terminated", minutes(210.5)),
    ]  # each state change exactly once, whichever service made it
    ids = [r.id for r in rows]
    assert all(a < b for a, b in itertools.pairwise(ids))
    assert {(r.size, r.price_per_hour, r.currency, r.tags) for r in rows} == {("t3.micro", "0.0104", "USD",
                                                                            '{"team": "a"}')}

    events = [metering.Event.from_row(r) for r in rows]
    start, end, now = hour(0), hour(23), clock.now()
    utc = lambda s: dt.datetime.fromtimestamp(s, dt.UTC)
    assert [(utc(r.start), utc(r.end)) for r in metering.runs(events)] == [
        (dt.datetime(2026, 3, 1, 10, 15, tzinfo=dt.UTC), dt.datetime(2026, 3, 1, 11, 5, tzinfo=dt.UTC)),
        (dt.datetime(2026, 3, 1, 11, 15, tzinfo=dt.UTC), dt.datetime(2026, 3, 1, 13, 45, 30, tzinfo=dt.UTC))]

    # per-second: 3000 s (10:15:00-11:05:00) + 9030 s (11:15:00-13:45:30)
    per_second = metering.report(events, start, end, "per-second", now)
    assert [(r.hour, r.seconds_running, r.quantity) for r in per_second.rows] == [
        (hour(10), 2700, 2700), (hour(11), 3000, 3000), (hour(12), 3600, 3600), (hour(13), 2730, 2730)]
    assert per_second.total() == {"USD": 12030 * RATE} == {"USD": Decimal("0.034753334670")}
    assert per_second.by_tag() == {("team=a", "USD"): 12030 * RATE}

    # hourly: one instance-hour from 10:15, then three from 11:15, 12:15, 13:15
    hourly = metering.report(events, start, end, "hourly", now)
    assert [(r.hour, r.quantity, r.cost) for r in hourly.rows] == [
        (hour(10), 1, PRICE), (hour(11), 1, PRICE), (hour(12), 1, PRICE), (hour(13), 1, PRICE)]
    assert hourly.total() == {"USD": Decimal("0.0416")}

    # later reports of the same period do not change (the instance is gone)
    clock.advance(days=3)
    for policy, report in (("per-second", per_second), ("hourly", hourly)):
        assert metering.report(events, start, end, policy, clock.now()) == report


def test_billing_reports_over_adjacent_periods_add_up(make_app, wait):
    clock = FakeClock(dt.datetime(2026, 3, 1, 10, 59, 50, tzinfo=dt.UTC))
    app = make_app(clock=clock, billing_policy="per-second")
    client, svc = app.test_client(), app.extensions["computed"]
    iid = client.post("/v1/instances", json={"size": "t3.micro"}).get_json()["instances"][0]["id"]
    wait(svc)
    clock.advance(seconds=40)
    assert client.post(f"/v1/instances/{iid}/stop").status_code == 202
    wait(svc)
    clock.set(hour(13))
    me = app.config["TEST_CALLER"]
    whole = svc.billing.report(me, hour(10), hour(12)).total()
    assert whole == {"USD": 60 * RATE}  # the minimum, as metering.report has it
    parts = [svc.billing.report(me, hour(10), hour(11)).total(), svc.billing.report(me, hour(11), hour(12)).total()]
    assert sum((p.get("USD", Decimal(0)) for p in parts), Decimal(0)) == whole["USD"]
