"""Billing arithmetic (``computed.billing.metering``): properties over random EC2-style event
histories for both policies, checked against a small reference model written here from
the module's docstring, plus hand-computed examples.

The reference model works in integer epoch seconds and recomputes the running stretches
itself (it does not call ``metering.runs``)."""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict
from dataclasses import dataclass, replace
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from computed.billing import metering
from computed.billing.metering import Event

BASE = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)  # histories span a few days around this
HOUR_S = 3600
POLICIES = metering.POLICIES

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- helpers ---------------------------------------------------------------------------------

def at(*args, us: int = 0) -> dt.datetime:
    """at(h, m=0, s=0) on BASE's day, or at(day, h, m, s) with day >= 1 (day 1 = BASE)."""
    if len(args) == 4:
        day, h, m, s = args
        return BASE + dt.timedelta(days=day - 1, hours=h, minutes=m, seconds=s, microseconds=us)
    return BASE.replace(hour=args[0], minute=args[1] if len(args) > 1 else 0,
                        second=args[2] if len(args) > 2 else 0, microsecond=us)


def epoch(t: dt.datetime) -> int:
    """Whole seconds since the epoch, floored (independent of metering.epoch)."""
    return int(t.timestamp() // 1)


def from_epoch(s: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(s, dt.UTC)


def event(seq: int, state: str, when: dt.datetime, instance_id: str = "i-1", price: str | Decimal = "0.0104",
          owner: str = "alice", size: str = "t3.micro", currency: str = "USD",
          tags: tuple[tuple[str, str], ...] = ()) -> Event:
    return Event(seq=seq, instance_id=instance_id, state=state, at=when, owner=owner, size=size,
                 image="debian-12-podman", price_per_hour=Decimal(price), currency=currency, tags=tags)


def history(*steps: tuple[str, dt.datetime], first_seq: int = 1, **attrs) -> list[Event]:
    return [event(first_seq + i, state, when, **attrs) for i, (state, when) in enumerate(steps)]


def one_run(start: dt.datetime, seconds: int, price: str | Decimal = "0.0104") -> list[Event]:
    """A launch whose only running stretch lasts SECONDS whole seconds from START, then a stop."""
    end = start + dt.timedelta(seconds=seconds)
    return history(("pending", start), ("running", start), ("stopping", end),
                   ("stopped", end + dt.timedelta(seconds=7)), price=price)


def by_key(report: metering.Report) -> dict:
    return {(r.hour, r.instance_id): (r.seconds_running, r.quantity, r.cost) for r in report.rows}


def total(report: metering.Report, currency: str = "USD") -> Decimal:
    return report.total().get(currency, Decimal(0))


def rate(price: str | Decimal) -> Decimal:
    return metering.per_second_rate(Decimal(price))


# -- random histories ------------------------------------------------------------------------

# EC2's state machine as this service drives it (computed/instances.py, computed/lifecycle.py):
# a failed launch goes pending -> terminated, a failed start pending -> stopped.
NEXT = {
    "pending": ("running",) * 6 + ("shutting-down", "terminated", "stopped"),
    "running": ("stopping",) * 4 + ("shutting-down",),
    "stopping": ("stopped",) * 3 + ("shutting-down",),
    "stopped": ("pending",) * 4 + ("shutting-down",),
    "shutting-down": ("terminated",),
}

GAPS = st.one_of(
    st.just(0),                       # several events in one second
    st.integers(0, 90),               # around the 60-second minimum
    st.integers(0, 2 * HOUR_S + 5),   # around whole hours
    st.integers(0, 36 * HOUR_S),      # long stretches
)
PRICES = st.decimals(min_value=Decimal(0), max_value=Decimal(50), places=4, allow_nan=False,
                     allow_infinity=False)
TAGS = st.dictionaries(st.sampled_from(["team", "env", "project", "cost-center"]),
                       st.sampled_from(["a", "b", "prod", ""]), max_size=3)


@dataclass(frozen=True)
class History:
    events: list[Event]
    now: dt.datetime  # no earlier than any event, as the service's clock is


@st.composite
def instance_steps(draw, allow_running: bool = True) -> list[tuple[str, dt.datetime]]:
    """One instance's (state, time) steps from launch, following the state machine."""
    t = BASE + dt.timedelta(seconds=draw(st.integers(-2 * 86400, 2 * 86400)),
                            microseconds=draw(st.integers(0, 999_999)))
    steps = [("pending", t)]
    length = draw(st.integers(0, 14))
    state, restarted = "pending", False
    for _ in range(length):
        if state == "terminated":
            break
        choices = [c for c in NEXT[state] if (allow_running or c != "running")
                   and (c != "stopped" or state != "pending" or restarted)]
        state = draw(st.sampled_from(choices))
        restarted = restarted or (state == "pending")
        gap = draw(GAPS)
        micro = 0 if gap == 0 and draw(st.booleans()) else draw(st.integers(0, 999_999))
        t = t + dt.timedelta(seconds=gap, microseconds=micro)
        steps.append((state, t))
    return steps


@st.composite
def histories(draw, allow_running: bool = True, max_instances: int = 5) -> History:
    n = draw(st.integers(1, max_instances))
    per_instance = []
    for i in range(n):
        attrs = {"instance_id": f"i-{i:017x}", "price": draw(PRICES),
                 "owner": draw(st.sampled_from(["alice", "bob", "default"])),
                 "size": draw(st.sampled_from(["t3.nano", "t3.micro", "t3.small", "big"])),
                 "currency": draw(st.sampled_from(["USD", "USD", "USD", "EUR"])),
                 "tags": tuple(sorted(draw(TAGS).items()))}
        per_instance.append((attrs, draw(instance_steps(allow_running))))
    # interleave the instances' events in any order (keeping each instance's own order)
    # and number them with strictly increasing, not necessarily consecutive, sequence numbers
    order = draw(st.permutations([i for i, (_, steps) in enumerate(per_instance) for _ in steps]))
    seq = draw(st.integers(1, 1000))
    taken = [0] * n
    events = []
    for i in order:
        attrs, steps = per_instance[i]
        state, when = steps[taken[i]]
        taken[i] += 1
        events.append(event(seq, state, when, **attrs))
        seq += draw(st.integers(1, 3))
    last = max(e.at for e in events)
    now = last + dt.timedelta(seconds=draw(st.one_of(st.just(0), st.integers(0, 120), st.integers(0, 3 * 86400))),
                              microseconds=draw(st.integers(0, 999_999)))
    return History(events, now)


# a report period: whole seconds (report floors anyway) from a little before the earliest
# possible event to a little after the latest
PERIOD_OFFSETS = st.integers(-3 * 86400, 6 * 86400)


@st.composite
def periods(draw) -> tuple[dt.datetime, dt.datetime]:
    a, c = sorted(draw(st.lists(PERIOD_OFFSETS, min_size=2, max_size=2, unique=True)))
    return BASE + dt.timedelta(seconds=a), BASE + dt.timedelta(seconds=c)


WHOLE = (BASE - dt.timedelta(days=4), BASE + dt.timedelta(days=12))  # contains everything


# -- the reference model ---------------------------------------------------------------------

def stretches(events) -> list[tuple[str, int, int | None, Event]]:
    """(instance, start, end or None while still running, the event entering running), in
    whole epoch seconds, walking each instance's events in sequence order."""
    evs = defaultdict(list)
    for e in sorted(events, key=lambda e: e.seq):
        evs[e.instance_id].append(e)
    out = []
    for iid, seq in evs.items():
        start = entry = None
        for e in seq:
            if e.state == "running" and start is None:
                start, entry = epoch(e.at), e
            elif e.state != "running" and start is not None:
                out.append((iid, start, max(start, epoch(e.at)), entry))
                start = None
        if start is not None:
            out.append((iid, start, None, entry))
    return out


def pieces(a: int, b: int):
    """[a, b) cut at clock hours: (hour start, seconds)."""
    while a < b:
        h = a - a % HOUR_S
        upto = min(h + HOUR_S, b)
        yield h, upto - a
        a = upto


def expected(events, start: dt.datetime, end: dt.datetime, policy: str, now: dt.datetime) -> dict:
    """(hour, instance) -> (seconds running, quantity, cost), straight from the docstring."""
    A, C, N = epoch(start), epoch(end), epoch(now)
    out = defaultdict(lambda: [0, Decimal(0), Decimal(0)])
    for iid, s, e, entry in stretches(events):
        e_eff = e if e is not None else max(N, s)
        price = entry.price_per_hour
        r = rate(price)
        for h, secs in pieces(max(s, A), min(e_eff, C, N)):
            out[(h, iid)][0] += secs
            if policy == "per-second":
                out[(h, iid)][1] += secs
                out[(h, iid)][2] += secs * r
        length = e_eff - s
        if policy == "hourly":
            blocks = max(1, -(-length // HOUR_S))
            for k in range(blocks):
                b = s + k * HOUR_S
                if A <= b < C and b <= max(N, s):
                    out[(b - b % HOUR_S, iid)][1] += 1
                    out[(b - b % HOUR_S, iid)][2] += price
        elif e is not None and length < 60 and A <= s < C:  # the top-up, once the run has ended
            out[(s - s % HOUR_S, iid)][1] += 60 - length
            out[(s - s % HOUR_S, iid)][2] += (60 - length) * r
    return {(from_epoch(h), iid): tuple(v) for (h, iid), v in out.items() if v[0] or v[1]}


def clock_hours_touched(events, now: dt.datetime) -> dict[str, set[dt.datetime]]:
    """instance -> the clock hours a running stretch overlaps (a zero-length stretch: its hour)."""
    N = epoch(now)
    out = defaultdict(set)
    for iid, s, e, _ in stretches(events):
        e_eff = e if e is not None else max(N, s)
        out[iid].add(from_epoch(s - s % HOUR_S))
        out[iid].update(from_epoch(h) for h, _ in pieces(s, e_eff))
    return out


# -- properties over random histories --------------------------------------------------------

@PROPERTY
@given(h=histories(), period=periods(), policy=st.sampled_from(POLICIES))
def test_report_matches_the_reference_model(h, period, policy):
    start, end = period
    report = metering.report(h.events, start, end, policy, h.now)
    assert by_key(report) == expected(h.events, start, end, policy, h.now)
    assert [(r.hour, r.instance_id) for r in report.rows] == sorted((r.hour, r.instance_id) for r in report.rows)
    # each row carries its instance's facts
    facts = {e.instance_id: (e.owner, e.size, e.image, e.currency, e.tags, e.price_per_hour) for e in h.events}
    for r in report.rows:
        assert (r.owner, r.size, r.image, r.currency, r.tags, r.rate) == facts[r.instance_id]
        assert all(isinstance(x, Decimal) for x in (r.cost, r.rate)) and type(r.quantity) is int


@PROPERTY
@given(h=histories(), period=periods(), policy=st.sampled_from(POLICIES))
def test_totals_are_exact_sums_and_every_grouping_adds_up(h, period, policy):
    report = metering.report(h.events, *period, policy, h.now)
    currencies = {r.currency for r in report.rows}
    totals = report.total()
    assert set(totals) == currencies
    for c in currencies:
        rows = [r for r in report.rows if r.currency == c]
        exact = sum((r.cost for r in rows), Decimal(0))
        assert totals[c] == exact
        assert isinstance(totals[c], Decimal)
        for grouping in (report.by_hour(), report.by_owner(), report.by_size()):
            assert sum((v for (_, cur), v in grouping.items() if cur == c), Decimal(0)) == exact
        assert (sum((v for (_, cur), v in report.by_tag().items() if cur == c), Decimal(0))
                == sum((r.cost * len(r.tags) for r in rows), Decimal(0)))
        # the groups are the rows' own values
        assert {k for k, cur in report.by_owner() if cur == c} == {r.owner for r in rows}
        assert {k for k, cur in report.by_size() if cur == c} == {r.size for r in rows}
        assert {k for k, cur in report.by_hour() if cur == c} == {r.hour for r in rows}
        assert {k for k, cur in report.by_tag() if cur == c} == {f"{k}={v}" for r in rows for k, v in r.tags}
    # no cost without a row, no row without something billed
    assert all(r.cost >= 0 and (r.seconds_running or r.quantity) for r in report.rows)


@PROPERTY
@given(h=histories(allow_running=False), period=periods(), policy=st.sampled_from(POLICIES))
def test_a_history_that_never_runs_costs_nothing(h, period, policy):
    assert not any(e.state == "running" for e in h.events)
    for start, end in (period, WHOLE):
        report = metering.report(h.events, start, end, policy, h.now)
        assert report.rows == []
        assert report.total() == {}


@PROPERTY
@given(h=histories(), period=periods(), policy=st.sampled_from(POLICIES))
def test_rows_only_for_clock_hours_with_running(h, period, policy):
    start, end = period
    report = metering.report(h.events, start, end, policy, h.now)
    touched = clock_hours_touched(h.events, h.now)
    first_hour = start.replace(minute=0, second=0, microsecond=0)
    for r in report.rows:
        assert 0 <= r.seconds_running <= 3600
        assert r.hour in touched[r.instance_id], r
        assert first_hour <= r.hour < end
        assert r.hour.minute == r.hour.second == r.hour.microsecond == 0
        if policy == "per-second":
            assert r.quantity >= r.seconds_running  # seconds, plus any top-up to the minimum
        else:
            # whole instance-hours, at most one per stretch in a clock hour (blocks are an hour apart)
            assert r.quantity == int(r.quantity)
            assert 0 <= r.quantity <= len([s for s in stretches(h.events) if s[0] == r.instance_id])


@PROPERTY
@given(h=histories(), policy=st.sampled_from(POLICIES), cuts=st.lists(PERIOD_OFFSETS, min_size=3, max_size=3,
                                                                       unique=True),
       later=st.integers(0, 86400))
def test_adjacent_periods_add_up_exactly(h, policy, cuts, later):
    a, b, c = (BASE + dt.timedelta(seconds=x) for x in sorted(cuts))
    now = max(h.now, c + dt.timedelta(seconds=later))
    whole = metering.report(h.events, a, c, policy, now)
    first = metering.report(h.events, a, b, policy, now)
    second = metering.report(h.events, b, c, policy, now)
    currencies = set(whole.total()) | set(first.total()) | set(second.total())
    for cur in currencies:
        assert whole.total().get(cur, 0) == first.total().get(cur, 0) + second.total().get(cur, 0)
    # also row by row (an hour cut by b is split between the two reports)
    joined = defaultdict(lambda: [0, Decimal(0), Decimal(0)])
    for part in (first, second):
        for key, (secs, qty, cost) in by_key(part).items():
            joined[key][0] += secs
            joined[key][1] += qty
            joined[key][2] += cost
    assert {k: tuple(v) for k, v in joined.items()} == by_key(whole)
    assert (sum(r.seconds_running for r in first.rows) + sum(r.seconds_running for r in second.rows)
            == sum(r.seconds_running for r in whole.rows))


@PROPERTY
@given(start=st.datetimes(min_value=dt.datetime(2026, 2, 27), max_value=dt.datetime(2026, 3, 3),
                          timezones=st.just(dt.UTC)),
       seconds=st.one_of(st.integers(0, 59), st.integers(60, 4 * 86400)), price=PRICES)
def test_per_second_sixty_second_minimum(start, seconds, price):
    report = metering.report(one_run(start, seconds, price), *WHOLE, "per-second", start + dt.timedelta(days=5))
    r = metering.per_second_rate(price)
    assert total(report) == max(seconds, 60) * r
    assert sum(row.seconds_running for row in report.rows) == seconds
    assert sum(row.quantity for row in report.rows) == max(seconds, 60)
    # the top-up lands in the clock hour of the start
    first = metering.floor_hour(start)
    assert report.rows[0].hour == first
    secs_in_first = min(seconds, 3600 - (epoch(start) % HOUR_S))
    assert report.rows[0].quantity == secs_in_first + max(0, 60 - seconds)


@PROPERTY
@given(start=st.datetimes(min_value=dt.datetime(2026, 2, 27), max_value=dt.datetime(2026, 3, 3),
                          timezones=st.just(dt.UTC)),
       seconds=st.one_of(st.integers(0, 5), st.integers(0, 4 * 86400),
                         st.integers(1, 96).flatmap(lambda h: st.integers(h * 3600 - 1, h * 3600 + 1))),
       price=PRICES)
def test_hourly_bills_each_started_hour_where_it_starts(start, seconds, price):
    report = metering.report(one_run(start, seconds, price), *WHOLE, "hourly", start + dt.timedelta(days=5))
    blocks = max(1, -(-seconds // 3600))
    assert total(report) == blocks * price
    s = metering.floor_second(start)
    assert {row.hour: row.quantity for row in report.rows if row.quantity} == {
        metering.floor_hour(s + dt.timedelta(hours=k)): 1 for k in range(blocks)}
    assert all(row.cost == row.quantity * price for row in report.rows)
    assert sum(row.seconds_running for row in report.rows) == seconds


@PROPERTY
@given(h=histories(), period=periods(), policy=st.sampled_from(POLICIES), data=st.data())
def test_moving_now_earlier_never_increases_the_total(h, period, policy, data):
    start, end = period
    last = max(e.at for e in h.events)
    span = int((h.now - last).total_seconds())
    earlier = last + dt.timedelta(seconds=data.draw(st.integers(0, max(span, 0))))
    earlier = min(earlier, h.now)
    late = metering.report(h.events, start, end, policy, h.now)
    early = metering.report(h.events, start, end, policy, earlier)
    for cur, amount in early.total().items():
        assert amount <= late.total().get(cur, Decimal(0))
    # and still-going runs are billed up to min(end, now) only
    for r in late.rows:
        assert r.hour <= max(h.now, start)


@PROPERTY
@given(h=histories(), policy=st.sampled_from(POLICIES), after=st.integers(0, 3 * 86400),
       length=st.integers(1, 3 * 86400))
def test_a_period_entirely_after_now_is_empty(h, policy, after, length):
    # from the whole second after now's (a period starting at now itself holds what started then)
    start = metering.floor_second(h.now) + dt.timedelta(seconds=1 + after)
    report = metering.report(h.events, start, start + dt.timedelta(seconds=length), policy, h.now)
    assert report.rows == []


@PROPERTY
@given(h=histories(), period=periods(), policy=st.sampled_from(POLICIES), seed=st.integers(0, 2**32))
def test_times_count_to_the_whole_second(h, period, policy, seed):
    rnd = random.Random(seed)
    # new microseconds for every event, still non-decreasing per instance
    micros = {}
    for e in sorted(h.events, key=lambda e: e.seq):
        key = (e.instance_id, metering.floor_second(e.at))
        micros.setdefault(key, []).append(rnd.randrange(1_000_000))
    for values in micros.values():
        values.sort(reverse=True)
    jittered = [replace(e, at=e.at.replace(microsecond=micros[(e.instance_id, metering.floor_second(e.at))].pop()))
                for e in sorted(h.events, key=lambda e: e.seq)]
    start, end = period
    now = h.now.replace(microsecond=rnd.randrange(1_000_000))
    original = metering.report(h.events, start, end, policy, h.now)
    shifted = metering.report(jittered, start.replace(microsecond=rnd.randrange(1_000_000)),
                              end.replace(microsecond=rnd.randrange(1_000_000)), policy, now)
    assert shifted.rows == original.rows
    assert shifted.total() == original.total()


@PROPERTY
@given(h=histories(), period=periods(), policy=st.sampled_from(POLICIES), seed=st.integers(0, 2**32))
def test_the_order_of_the_events_does_not_matter(h, period, policy, seed):
    shuffled = list(h.events)
    random.Random(seed).shuffle(shuffled)
    assert metering.report(shuffled, *period, policy, h.now) == metering.report(h.events, *period, policy, h.now)
    assert metering.report(list(reversed(h.events)), *period, policy, h.now) == metering.report(
        h.events, *period, policy, h.now)


# -- examples, computed by hand ------------------------------------------------------------

MICRO_RATE = Decimal("0.000002888889")  # 0.0104 / 3600 = 0.0000028888..., to 12 places


def two_runs() -> list[Event]:
    """10:30-12:00, then a 30-second run at 12:10, on t3.micro (0.0104/h)."""
    return history(("pending", at(10, 29, 58)), ("running", at(10, 30)), ("stopping", at(12, 0)),
                   ("stopped", at(12, 0, 5)), ("pending", at(12, 9, 59)), ("running", at(12, 10)),
                   ("stopping", at(12, 10, 30)), ("stopped", at(12, 10, 31)))


def test_per_second_rate_is_rounded_half_even_to_12_places():
    assert metering.per_second_rate(Decimal("0.0104")) == MICRO_RATE
    assert metering.per_second_rate(Decimal("3.6")) == Decimal("0.001000000000")
    assert metering.per_second_rate(Decimal("0.0000000018")) == Decimal("0.000000000000")  # 5e-13: to even
    assert metering.per_second_rate(Decimal("0.0000000054")) == Decimal("0.000000000002")  # 1.5e-12: to even
    assert metering.per_second_rate(Decimal("0.0000000090")) == Decimal("0.000000000002")  # 2.5e-12: to even
    assert metering.per_second_rate(Decimal(0)) == 0


def test_example_hourly():
    report = metering.report(two_runs(), at(0), at(23), "hourly", at(23))
    assert [(r.hour, r.seconds_running, r.quantity, r.cost) for r in report.rows] == [
        (at(10), 1800, 1, Decimal("0.0104")),
        (at(11), 3600, 1, Decimal("0.0104")),
        (at(12), 30, 1, Decimal("0.0104")),
    ]
    assert report.total() == {"USD": Decimal("0.0312")}
    assert report.by_owner() == {("alice", "USD"): Decimal("0.0312")}
    assert report.by_size() == {("t3.micro", "USD"): Decimal("0.0312")}
    assert report.by_tag() == {}


def test_example_per_second():
    report = metering.report(two_runs(), at(0), at(23), "per-second", at(23))
    assert [(r.hour, r.seconds_running, r.quantity, r.cost) for r in report.rows] == [
        (at(10), 1800, 1800, Decimal("0.005200000200")),
        (at(11), 3600, 3600, Decimal("0.010400000400")),
        (at(12), 30, 60, Decimal("0.000173333340")),
    ]
    assert report.total() == {"USD": Decimal("0.015773333940")}  # 5460 s x 0.000002888889


def test_example_periods_cut_the_runs():
    events = two_runs()
    # hourly: the 10:30-12:00 run is two instance-hours, starting 10:30 and 11:30
    assert total(metering.report(events, at(11), at(12), "hourly", at(23))) == Decimal("0.0104")
    assert total(metering.report(events, at(10, 45), at(11, 15), "hourly", at(23))) == 0
    assert total(metering.report(events, at(11, 15), at(11, 45), "hourly", at(23))) == Decimal("0.0104")
    # per-second: 30 min
    assert total(metering.report(events, at(10, 45), at(11, 15), "per-second", at(23))) == 1800 * MICRO_RATE
    # the 30-second run's top-up goes with its start (12:10:00), not with its seconds
    assert by_key(metering.report(events, at(12, 10), at(12, 10, 10), "per-second", at(23))) == {
        (at(12), "i-1"): (10, 40, 40 * MICRO_RATE)}
    assert by_key(metering.report(events, at(12, 10, 10), at(13), "per-second", at(23))) == {
        (at(12), "i-1"): (20, 20, 20 * MICRO_RATE)}


def test_example_hourly_boundaries():
    for seconds, hours in ((0, 1), (1, 1), (3599, 1), (3600, 1), (3601, 2), (7200, 2), (7201, 3)):
        report = metering.report(one_run(at(9, 59, 30, us=500_000), seconds), at(0), at(23), "hourly", at(23))
        assert total(report) == hours * Decimal("0.0104"), seconds
        # blocks start 9:59:30, 10:59:30, 11:59:30: clock hours 9, 10, 11
        assert {r.hour: r.quantity for r in report.rows if r.quantity} == {at(9 + k): 1 for k in range(hours)}


def test_example_per_second_minimum():
    for seconds, billed in ((0, 60), (1, 60), (59, 60), (60, 60), (61, 61), (3601, 3601)):
        report = metering.report(one_run(at(9, 59, 30, us=999_999), seconds), at(0), at(23), "per-second", at(23))
        assert total(report) == billed * MICRO_RATE, seconds
    # a zero-length run (running and stopping in the same second) still bills the minimum
    events = history(("pending", at(8, us=1)), ("running", at(8, 0, 0, us=2)), ("stopping", at(8, 0, 0, us=900_000)),
                     ("stopped", at(8, 0, 1)))
    assert by_key(metering.report(events, at(0), at(23), "per-second", at(23))) == {
        (at(8), "i-1"): (0, 60, 60 * MICRO_RATE)}
    assert by_key(metering.report(events, at(0), at(23), "hourly", at(23))) == {
        (at(8), "i-1"): (0, 1, Decimal("0.0104"))}


def test_example_still_running():
    events = history(("pending", at(10, 30)), ("running", at(10, 30)))
    # per-second: up to now (11:45), never past the period's end
    assert total(metering.report(events, at(0), at(23), "per-second", at(11, 45))) == 4500 * MICRO_RATE
    assert total(metering.report(events, at(0), at(11), "per-second", at(11, 45))) == 1800 * MICRO_RATE
    # hourly: the hours started by now: 10:30 and 11:30
    assert total(metering.report(events, at(0), at(23), "hourly", at(11, 45))) == Decimal("0.0208")
    assert total(metering.report(events, at(0), at(23), "hourly", at(11, 30))) == Decimal("0.0104")
    assert total(metering.report(events, at(0), at(23), "hourly", at(11, 30, 1))) == Decimal("0.0208")
    assert total(metering.report(events, at(0), at(11), "hourly", at(11, 45))) == Decimal("0.0104")
    # a period after now, or before the run, is empty
    for policy in POLICIES:
        assert metering.report(events, at(12), at(23), policy, at(11, 45)).rows == []
        assert metering.report(events, at(0), at(10, 30), policy, at(11, 45)).rows == []
    # just started: per second, only the seconds so far (the minimum's top-up comes when the
    # run ends); hourly, the first instance-hour at once
    assert total(metering.report(events, at(0), at(23), "per-second", at(10, 30, 20))) == 20 * MICRO_RATE
    for now in (at(10, 30), at(10, 30, 0, us=999_999)):
        assert by_key(metering.report(events, at(0), at(23), "per-second", now)) == {}
        assert by_key(metering.report(events, at(0), at(23), "hourly", now)) == {
            (at(10), "i-1"): (0, 1, Decimal("0.0104"))}


def test_example_several_instances_group_by_owner_size_and_tag():
    a = history(("pending", at(1)), ("running", at(1)), ("shutting-down", at(3)), ("terminated", at(3, 0, 1)),
                instance_id="i-a", owner="alice", size="t3.micro", tags=(("env", "prod"), ("team", "x")))
    b = history(("pending", at(1, 30)), ("running", at(1, 30)), ("stopping", at(2, 30)), ("stopped", at(2, 31)),
                first_seq=10, instance_id="i-b", owner="bob", size="t3.small", price="0.0208", tags=(("team", "x"),))
    report = metering.report(a + b, at(0), at(23), "hourly", at(23))
    assert report.total() == {"USD": Decimal("0.0416")}  # 2 x 0.0104 + 1 x 0.0208
    assert report.by_owner() == {("alice", "USD"): Decimal("0.0208"), ("bob", "USD"): Decimal("0.0208")}
    assert report.by_size() == {("t3.micro", "USD"): Decimal("0.0208"), ("t3.small", "USD"): Decimal("0.0208")}
    assert report.by_tag() == {("env=prod", "USD"): Decimal("0.0208"), ("team=x", "USD"): Decimal("0.0416")}
    assert report.by_hour() == {(at(1), "USD"): Decimal("0.0312"), (at(2), "USD"): Decimal("0.0104")}
    per_second = metering.report(a + b, at(0), at(23), "per-second", at(23))
    assert per_second.total() == {"USD": 7200 * MICRO_RATE + 3600 * rate("0.0208")}


def test_example_currencies_are_kept_apart():
    a = history(("pending", at(1)), ("running", at(1)), ("stopping", at(2)), instance_id="i-a", currency="EUR")
    b = history(("pending", at(1)), ("running", at(1)), ("stopping", at(2)), first_seq=5, instance_id="i-b")
    assert metering.report(a + b, at(0), at(23), "hourly", at(23)).total() == {
        "EUR": Decimal("0.0104"), "USD": Decimal("0.0104")}


def test_unknown_policy():
    with pytest.raises(ValueError):
        metering.report([], at(0), at(1), "per-minute", at(2))


def test_per_second_past_period_total_never_shrinks_as_now_advances():
    events = history(("pending", at(10, 59, 50)), ("running", at(10, 59, 50)))
    totals = [total(metering.report(events, at(10), at(11), "per-second", now))
              for now in (at(11), at(11, 0, 20), at(11, 1))]
    assert totals == sorted(totals)
