"""Billing: hourly cost reports and the cost so far of an instance, from the usage events
in the store and the billing policy (a setting); the arithmetic is in ``metering``."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import select

from . import metering
from .clock import Clock
from .db import Database
from .errors import InvalidParameterValue
from .models import Instance, UsageEvent

MAX_PERIOD = dt.timedelta(days=366)
GROUPS = ("hour", "owner", "size", "tag")


class Billing:
    def __init__(self, db: Database, policy: str, clock: Clock):
        self.db = db
        self.policy = policy
        self.clock = clock

    def _events(self, instance_id: str | None = None) -> list[metering.Event]:
        # Not only those before the period's end: the event that ends a run after the period
        # decides whether that run still owes its 60-second minimum.
        q = select(UsageEvent).order_by(UsageEvent.id)
        if instance_id:
            q = q.where(UsageEvent.instance_id == instance_id)
        with self.db.session() as s:
            return [metering.Event.from_row(r) for r in s.scalars(q)]

    def report(self, start: dt.datetime, end: dt.datetime) -> metering.Report:
        check_period(start, end)
        return metering.report(self._events(), start, end, self.policy, self.clock.now())

    def cost_so_far(self, inst: Instance) -> Decimal:
        """What the instance has cost from its launch until now."""
        now = self.clock.now()
        start = metering.floor_hour(inst.launch_time)
        end = max(now, start) + dt.timedelta(seconds=1)
        report = metering.report(self._events(inst.id), start, end, self.policy, now)
        return report.total().get(inst.currency, Decimal(0))


def check_period(start: dt.datetime, end: dt.datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidParameterValue("start and end need a time zone (e.g. 2026-03-01T00:00:00Z)")
    if end <= start:
        raise InvalidParameterValue("end must be after start")
    if end - start > MAX_PERIOD:
        raise InvalidParameterValue("a report covers at most a year (366 days)")
