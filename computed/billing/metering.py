"""Billing from usage events: only ``running`` is billed, under one of two policies.

- ``hourly`` (the default): each started hour of running time, counted from the moment the
  instance entered ``running``, is one full instance-hour at the hourly price. A stop ends
  the count; a start begins a new one. Each instance-hour is billed in the UTC clock hour
  in which it starts.
- ``per-second``: EC2's Linux billing since 2017: per second of running time, with a
  60-second minimum for each start, at the hourly price / 3600. The top-up to 60 seconds
  of a short run is billed once the run has ended, in the clock hour in which it started
  (so a report never shrinks as time passes, and adjacent periods still add up).

Times are taken to the whole second (earlier, i.e. floored). Rounding, the only one: the
per-second rate is the hourly price / 3600 rounded half-even to 12 decimal places
(``RATE_PLACES``); every cost is then an exact product (seconds x rate, or hours x price),
and totals are exact sums, so reports over adjacent periods add up exactly. Amounts are
``decimal.Decimal`` throughout, never float; rounding for display is the reader's choice.

A run still going at the end of a report period is billed up to that end, but never past
the clock's "now".

The arithmetic works on runs (``Run``: one stretch of ``running``, in whole epoch seconds);
``runs`` finds them in a list of events, and the store finds them with SQL (``billing``), so
a report over a million events never holds the events in memory.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache
from itertools import groupby
from typing import NamedTuple

from computed.compute.state import State

POLICIES = ("hourly", "per-second")
MINIMUM_SECONDS = 60
RATE_PLACES = Decimal("1e-12")
HOUR_S = 3600


@dataclass(frozen=True, slots=True)
class Usage:
    """What a run is billed as: the instance as it was when it entered ``running``."""
    owner: str
    size: str
    image: str
    price_per_hour: Decimal
    currency: str
    tags: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Event:
    seq: int
    instance_id: str
    state: str
    at: dt.datetime
    owner: str
    size: str
    image: str
    price_per_hour: Decimal
    currency: str
    tags: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_row(cls, row) -> Event:
        return cls(seq=row.id, instance_id=row.instance_id, state=row.state, at=row.at, owner=row.owner,
                   size=row.size, image=row.image, price_per_hour=Decimal(row.price_per_hour),
                   currency=row.currency, tags=parse_tags(row.tags))

    @property
    def usage(self) -> Usage:
        return Usage(self.owner, self.size, self.image, self.price_per_hour, self.currency, self.tags)


class Run(NamedTuple):
    """One continuous stretch of ``running``: [start, end) in whole epoch seconds, end None
    while still running."""
    instance_id: str
    start: int
    end: int | None
    usage: Usage


class Row(NamedTuple):
    """One instance in one UTC clock hour; its billing facts are those of the first run in
    that hour (shared, not copied: a report may hold a million rows)."""
    hour: dt.datetime
    instance_id: str
    usage: Usage
    seconds_running: int
    quantity: int  # instance-hours (hourly) or seconds (per-second)
    cost: Decimal

    owner = property(lambda self: self.usage.owner)
    size = property(lambda self: self.usage.size)
    image = property(lambda self: self.usage.image)
    currency = property(lambda self: self.usage.currency)
    tags = property(lambda self: self.usage.tags)
    rate = property(lambda self: self.usage.price_per_hour, doc="price per hour")


@dataclass
class Report:
    """Rows ordered by hour and instance, and the totals: the sums of the rows' costs,
    kept per hour and per set of billing facts (``Usage``) as the rows are made, from which
    every grouping follows."""
    start: dt.datetime
    end: dt.datetime
    policy: str
    rows: list[Row] = field(default_factory=list)
    hour_totals: dict[tuple[dt.datetime, str], Decimal] = field(default_factory=dict, repr=False)
    usage_totals: dict[Usage, Decimal] = field(default_factory=dict, repr=False)

    def total(self) -> dict[str, Decimal]:
        """Currency -> total cost."""
        return self._group(lambda u: [u.currency])

    def by_hour(self) -> dict:
        return dict(self.hour_totals)

    def by_owner(self) -> dict:
        return self._group(lambda u: [(u.owner, u.currency)])

    def by_size(self) -> dict:
        return self._group(lambda u: [(u.size, u.currency)])

    def by_tag(self) -> dict:
        return self._group(lambda u: [(f"{k}={v}", u.currency) for k, v in u.tags])

    def _group(self, keys) -> dict:
        out: dict = defaultdict(Decimal)
        for usage, cost in self.usage_totals.items():
            for k in keys(usage):
                out[k] += cost
        return dict(out)


def epoch(t: dt.datetime) -> int:
    """Whole seconds since the epoch, floored."""
    return int(t.timestamp() // 1)


def floor_second(t: dt.datetime) -> dt.datetime:
    return t.replace(microsecond=0)


def floor_hour(t: dt.datetime) -> dt.datetime:
    return t.replace(minute=0, second=0, microsecond=0)


@lru_cache(maxsize=16384)  # a year of hours
def _utc(ts: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


@lru_cache(maxsize=4096)
def parse_tags(text: str | None) -> tuple[tuple[str, str], ...]:
    """Tags as stored with a usage event (a JSON object) -> sorted (key, value) pairs."""
    return tuple(sorted(json.loads(text or "{}").items()))


def per_second_rate(price_per_hour: Decimal) -> Decimal:
    return (price_per_hour / 3600).quantize(RATE_PLACES, rounding=ROUND_HALF_EVEN)


def runs(events: Iterable[Event]) -> list[Run]:
    """The running stretches in EVENTS (any order; sorted by sequence number here), by
    instance and start."""
    by_instance: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        by_instance[e.instance_id].append(e)
    found = []
    for instance_id in sorted(by_instance):
        open_run: Event | None = None
        for e in sorted(by_instance[instance_id], key=lambda e: e.seq):
            if e.state == State.RUNNING and open_run is None:
                open_run = e
            elif e.state != State.RUNNING and open_run is not None:
                start = epoch(open_run.at)
                found.append(Run(instance_id, start, max(epoch(e.at), start), open_run.usage))
                open_run = None
        if open_run is not None:
            found.append(Run(instance_id, epoch(open_run.at), None, open_run.usage))
    return found


def report(events: Iterable[Event], start: dt.datetime, end: dt.datetime, policy: str,
           now: dt.datetime) -> Report:
    """The hourly cost report for [START, END) from a list of usage events."""
    return report_runs(runs(events), start, end, policy, now)


def report_runs(found: Iterable[Run], start: dt.datetime, end: dt.datetime, policy: str,
                now: dt.datetime) -> Report:
    """The hourly cost report for [START, END): one row per instance per UTC clock hour.
    FOUND must come grouped by instance (as ``runs`` and the store give them); runs outside
    the period add nothing."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}")
    hourly = policy == "hourly"
    p0, p1, now_s = epoch(start), epoch(end), epoch(now)
    by_hour: dict[int, list[Row]] = defaultdict(list)  # each in instance order, as FOUND is
    hour_totals: dict[tuple[dt.datetime, str], Decimal] = defaultdict(Decimal)
    usage_totals: dict[Usage, Decimal] = defaultdict(Decimal)
    costs: dict[tuple[int, Decimal], Decimal] = {}  # (quantity, price per hour) -> cost
    done: set[str] = set()
    for instance_id, group in groupby(found, key=lambda run: run.instance_id):
        if instance_id in done:
            raise ValueError(f"runs of {instance_id} are not grouped together")
        done.add(instance_id)
        cells: dict[int, list] = {}  # clock hour -> [seconds running, quantity, usage]
        for _, s, e, usage in group:
            run_end = max(e, s) if e is not None else max(now_s, s)
            billed_end = min(run_end, p1, max(now_s, p0))  # never past the period's end or now
            # seconds running, clock hour by clock hour, inside the period
            t = max(s, p0)
            while t < billed_end:
                hour = t - t % HOUR_S
                upto = min(hour + HOUR_S, billed_end)
                cell = cells.get(hour) or cells.setdefault(hour, [0, 0, usage])
                cell[0] += upto - t
                if not hourly:
                    cell[1] += upto - t
                t = upto
            if hourly:
                # instance-hour k starts at s + k h: k < blocks, start <= s + k h < end, <= now
                blocks = max(1, -(-(run_end - s) // HOUR_S))
                first = max(0, -(-(p0 - s) // HOUR_S))
                last = min(blocks - 1, (min(p1 - 1, max(now_s, s)) - s) // HOUR_S)
                for block in range(s + first * HOUR_S, s + (last + 1) * HOUR_S, HOUR_S):
                    hour = block - block % HOUR_S
                    cell = cells.get(hour) or cells.setdefault(hour, [0, 0, usage])
                    cell[1] += 1
            elif e is not None and run_end - s < MINIMUM_SECONDS and p0 <= s < p1:
                hour = s - s % HOUR_S
                cell = cells.get(hour) or cells.setdefault(hour, [0, 0, usage])
                cell[1] += MINIMUM_SECONDS - (run_end - s)
        for hour, (seconds, quantity, u) in cells.items():
            cost = costs.get((quantity, u.price_per_hour))
            if cost is None:  # one object per amount, shared by the rows
                unit = u.price_per_hour if hourly else per_second_rate(u.price_per_hour)
                cost = costs[(quantity, u.price_per_hour)] = quantity * unit
            when = _utc(hour)
            by_hour[hour].append(Row(when, instance_id, u, seconds, quantity, cost))
            hour_totals[(when, u.currency)] += cost
            usage_totals[u] += cost
    rows = [r for hour in sorted(by_hour) for r in by_hour[hour]]
    return Report(_utc(p0), _utc(p1), policy, rows, dict(hour_totals), dict(usage_totals))
