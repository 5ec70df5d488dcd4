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
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

POLICIES = ("hourly", "per-second")
MINIMUM_SECONDS = 60
RATE_PLACES = Decimal("1e-12")
HOUR = dt.timedelta(hours=1)


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
                   currency=row.currency, tags=tuple(sorted(json.loads(row.tags or "{}").items())))


@dataclass(frozen=True)
class Run:
    """One continuous stretch of ``running``: [start, end), end None while still running."""
    instance_id: str
    start: dt.datetime
    end: dt.datetime | None
    event: Event  # the event that entered running: price, size, owner, tags


@dataclass
class Row:
    hour: dt.datetime
    instance_id: str
    owner: str
    size: str
    image: str
    currency: str
    tags: tuple[tuple[str, str], ...]
    rate: Decimal  # price per hour
    seconds_running: int = 0
    quantity: Decimal = Decimal(0)  # instance-hours (hourly) or seconds (per-second)
    cost: Decimal = Decimal(0)


@dataclass
class Report:
    start: dt.datetime
    end: dt.datetime
    policy: str
    rows: list[Row] = field(default_factory=list)

    def total(self) -> dict[str, Decimal]:
        """Currency -> total cost."""
        return self.totals_by(lambda r: r.currency)

    def totals_by(self, key) -> dict:
        out: dict = defaultdict(Decimal)
        for row in self.rows:
            keys = key(row)
            for k in keys if isinstance(keys, list) else [keys]:
                out[k] += row.cost
        return dict(out)

    def by_hour(self) -> dict:
        return self.totals_by(lambda r: (r.hour, r.currency))

    def by_owner(self) -> dict:
        return self.totals_by(lambda r: (r.owner, r.currency))

    def by_size(self) -> dict:
        return self.totals_by(lambda r: (r.size, r.currency))

    def by_tag(self) -> dict:
        return self.totals_by(lambda r: [(f"{k}={v}", r.currency) for k, v in r.tags])


def floor_second(t: dt.datetime) -> dt.datetime:
    return t.replace(microsecond=0)


def floor_hour(t: dt.datetime) -> dt.datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def per_second_rate(price_per_hour: Decimal) -> Decimal:
    return (price_per_hour / 3600).quantize(RATE_PLACES, rounding=ROUND_HALF_EVEN)


def runs(events: Iterable[Event]) -> list[Run]:
    """The running stretches in EVENTS (any order; sorted by sequence number here)."""
    by_instance: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        by_instance[e.instance_id].append(e)
    found = []
    for instance_id, evs in by_instance.items():
        evs.sort(key=lambda e: e.seq)
        open_run: Event | None = None
        for e in evs:
            if e.state == "running" and open_run is None:
                open_run = e
            elif e.state != "running" and open_run is not None:
                found.append(Run(instance_id, floor_second(open_run.at), max(floor_second(e.at),
                                                                             floor_second(open_run.at)), open_run))
                open_run = None
        if open_run is not None:
            found.append(Run(instance_id, floor_second(open_run.at), None, open_run))
    return found


def report(events: Iterable[Event], start: dt.datetime, end: dt.datetime, policy: str,
           now: dt.datetime) -> Report:
    """The hourly cost report for [START, END): one row per instance per UTC clock hour."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}")
    start, end, now = floor_second(start), floor_second(end), floor_second(now)
    rows: dict[tuple[dt.datetime, str], Row] = {}

    def row(hour: dt.datetime, run: Run) -> Row:
        key = (hour, run.instance_id)
        if key not in rows:
            e = run.event
            rows[key] = Row(hour, run.instance_id, e.owner, e.size, e.image, e.currency, e.tags, e.price_per_hour)
        return rows[key]

    for run in runs(events):
        run_end = run.end if run.end is not None else max(now, run.start)
        billed_end = min(run_end, end, max(now, start))  # never past the period's end or now
        # seconds running, clock hour by clock hour, inside the period
        t = max(run.start, start)
        while t < billed_end:
            next_hour = floor_hour(t) + HOUR
            upto = min(next_hour, billed_end)
            row(floor_hour(t), run).seconds_running += int((upto - t).total_seconds())
            t = upto
        price = run.event.price_per_hour
        if policy == "hourly":
            length = (run_end - run.start).total_seconds()
            blocks = max(1, -(-int(length) // 3600))
            for k in range(blocks):
                block_start = run.start + k * HOUR
                if start <= block_start < end and block_start <= max(now, run.start):
                    r = row(floor_hour(block_start), run)
                    r.quantity += 1
                    r.cost += price
        else:
            rate = per_second_rate(price)
            t = max(run.start, start)
            while t < billed_end:
                upto = min(floor_hour(t) + HOUR, billed_end)
                seconds = int((upto - t).total_seconds())
                r = row(floor_hour(t), run)
                r.quantity += seconds
                r.cost += seconds * rate
                t = upto
            length = int((run_end - run.start).total_seconds())
            if run.end is not None and length < MINIMUM_SECONDS and start <= run.start < end:
                top_up = MINIMUM_SECONDS - length
                r = row(floor_hour(run.start), run)
                r.quantity += top_up
                r.cost += top_up * rate
    ordered = sorted(rows.values(), key=lambda r: (r.hour, r.instance_id))
    return Report(start, end, policy, [r for r in ordered if r.seconds_running or r.quantity])
