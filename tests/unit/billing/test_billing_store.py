"""The store's side of billing (``computed.billing.reports``): the running stretches that SQL finds
in the usage events are the ones ``metering.runs`` finds in the same events, so a report
from the store equals a report from the events, for random EC2-style histories and both
policies, on SQLite and on PostgreSQL (the ``pg`` variants); a report reads without holding
SQLite's write lock; the collector pause used by reports nests across threads."""

from __future__ import annotations

import datetime as dt
import gc
import json
import sqlite3
import threading
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import delete

from computed.billing import metering
from computed.accounts.registry import Caller
from computed.billing.reports import Billing
from computed.errors import InvalidParameterValue
from computed.clock import FakeClock
from computed.store.engine import Database
from computed.billing.gc_pause import paused_gc
from computed.store.models import UsageEvent
from tests.postgres import BACKENDS
from tests.unit.billing.test_metering import BASE, FEW, POLICIES, PROPERTY, WHOLE, at, histories, history, periods


ADMIN = Caller("000000000000", "admin", admin=True)


@pytest.fixture(scope="module", params=BACKENDS)
def db(request, tmp_path_factory):
    """One store for the module (the property tests replace its events in each example)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('billing')}/store.sqlite"
    else:
        server = request.getfixturevalue("postgres_server")
        url = server.create_database()
        request.addfinalizer(lambda: server.drop_database(url))
    database = Database(url)
    yield database
    database.dispose()


def store(db: Database, events: list[metering.Event]) -> None:
    """Replace the store's usage events with EVENTS (their sequence numbers as ids)."""
    with db.session() as s:
        s.execute(delete(UsageEvent))
        s.add_all(UsageEvent(id=e.seq, instance_id=e.instance_id, owner=e.owner, size=e.size, image=e.image,
                             price_per_hour=str(e.price_per_hour), currency=e.currency, state=e.state, at=e.at,
                             tags=json.dumps(dict(e.tags), sort_keys=True)) for e in events)


def billing(db: Database, policy: str, now: dt.datetime) -> Billing:
    return Billing(db, policy, FakeClock(now))


@PROPERTY
@given(h=histories(max_instances=6))
def test_the_store_finds_the_runs_metering_finds(db, h):
    store(db, h.events)
    assert list(billing(db, "hourly", h.now).runs()) == metering.runs(h.events)


@PROPERTY
@given(h=histories(max_instances=6), period=periods())
def test_the_store_finds_every_run_that_touches_a_period(db, h, period):
    store(db, h.events)
    start, end = period
    found = list(billing(db, "hourly", h.now).runs(start, end))
    everything = metering.runs(h.events)
    assert set(found) <= set(everything)
    for run in set(everything) - set(found):  # those left out are wholly outside the period
        assert run.start >= metering.epoch(end) or (run.end is not None and run.end < metering.epoch(start))


@PROPERTY
@given(h=histories(max_instances=6), period=periods(), policy=st.sampled_from(POLICIES))
def test_a_report_from_the_store_is_the_report_from_the_events(db, h, period, policy):
    store(db, h.events)
    for start, end in (period, WHOLE):
        from_store = billing(db, policy, h.now).report(ADMIN, start, end)
        assert from_store == metering.report(h.events, start, end, policy, h.now)
        assert from_store.by_owner() == metering.report(h.events, start, end, policy, h.now).by_owner()


@FEW
@given(h=histories(max_instances=6), period=periods(), policy=st.sampled_from(POLICIES),
       owner=st.sampled_from(["alice", "bob", "default"]))
def test_an_account_sees_its_own_usage_and_an_admin_any(db, h, period, policy, owner):
    store(db, h.events)
    own = [e for e in h.events if e.owner == owner]
    expected = metering.report(own, *period, policy, h.now)
    account = billing(db, policy, h.now)
    assert account.report(Caller(owner, owner), *period) == expected
    assert account.report(ADMIN, *period, account=owner) == expected
    assert account.report(ADMIN, *period) == metering.report(h.events, *period, policy, h.now)
    with pytest.raises(InvalidParameterValue, match="only an admin"):
        account.report(Caller(owner, owner), *period, account="bob")


@FEW
@given(h=histories(max_instances=4), instance=st.integers(0, 3))
def test_the_runs_of_one_instance(db, h, instance):
    store(db, h.events)
    iid = f"i-{instance:017x}"
    assert list(billing(db, "hourly", h.now).runs(instance_ids=[iid])) == [
        r for r in metering.runs(h.events) if r.instance_id == iid]


def test_times_are_floored_to_the_second_not_rounded(db):
    # SQLite's own strftime would round 10:00:00.9996 up to 10:00:01
    events = history(("pending", at(9)), ("running", at(10, 0, 0, us=999_600)),
                     ("stopping", at(10, 0, 59, us=999_999)), ("stopped", at(10, 1)))
    store(db, events)
    [run] = billing(db, "per-second", at(12)).runs()
    assert (run.start, run.end) == (metering.epoch(at(10)), metering.epoch(at(10, 0, 59)))
    assert metering.runs(events) == [run]
    report = billing(db, "per-second", at(12)).report(ADMIN, at(0), at(23))
    assert [(r.seconds_running, r.quantity) for r in report.rows] == [(59, 60)]  # 59 s, topped up to 60


def test_a_run_whose_end_was_written_with_an_earlier_time_lasts_nothing(db):
    # the sequence decides the order; a clock stepped back cannot make a run negative
    events = history(("pending", at(10)), ("running", at(10, 30)), ("stopping", at(10, 20)), ("stopped", at(10, 21)))
    store(db, events)
    [run] = billing(db, "hourly", at(12)).runs()
    assert run.start == run.end == metering.epoch(at(10, 30))
    assert billing(db, "hourly", at(12)).report(ADMIN, at(0), at(23)).total() == {"USD": Decimal("0.0104")}
    per_second = billing(db, "per-second", at(12)).report(ADMIN, at(0), at(23))
    assert [(r.seconds_running, r.quantity) for r in per_second.rows] == [(0, 60)]
    # a period that starts between the two times still holds the run
    assert billing(db, "hourly", at(12)).report(ADMIN, at(10, 25), at(11)).total() == {"USD": Decimal("0.0104")}
    assert billing(db, "hourly", at(12)).report(ADMIN, at(10, 31), at(11)).total() == {}


def test_runs_must_come_grouped_by_instance():
    a, b = (history(("running", at(10)), ("stopped", at(11)), instance_id=i) for i in ("i-a", "i-b"))
    runs = metering.runs(a + b)
    assert [r.instance_id for r in runs] == ["i-a", "i-b"]
    metering.report_runs(runs, *WHOLE, "hourly", at(12))
    shuffled = [runs[0], runs[1], runs[0]._replace(start=runs[0].start + 7200, end=runs[0].end + 7200)]
    with pytest.raises(ValueError, match="not grouped"):
        metering.report_runs(shuffled, *WHOLE, "hourly", at(12))


@pytest.mark.sqlite_only
def test_a_report_does_not_hold_the_write_lock(db):
    store(db, history(("pending", at(9)), ("running", at(10))))
    path = db.engine.url.database
    with db.reading() as s:
        s.execute(UsageEvent.__table__.select()).all()
        writer = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")  # would raise "database is locked"
            writer.execute("ROLLBACK")
        finally:
            writer.close()
    with db.session() as s:  # a writing session still takes it
        s.execute(UsageEvent.__table__.select()).all()
        writer = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                writer.execute("BEGIN IMMEDIATE")
        finally:
            writer.close()


def test_the_collector_pause_nests_across_threads():
    assert gc.isenabled()
    inside, release = threading.Event(), threading.Event()

    def other():
        with paused_gc():
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=other)
    with paused_gc():
        assert not gc.isenabled()
        thread.start()
        inside.wait(10)
    assert not gc.isenabled()  # the other thread's pause is still on
    release.set()
    thread.join(10)
    assert gc.isenabled()
    gc.disable()
    try:  # a collector that was off stays off
        with paused_gc():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_report_leaves_the_collector_on(db):
    store(db, history(("pending", BASE), ("running", BASE + dt.timedelta(minutes=1)), instance_id="i-1"))
    billing(db, "hourly", BASE + dt.timedelta(hours=3)).report(ADMIN, *WHOLE)
    assert gc.isenabled()
