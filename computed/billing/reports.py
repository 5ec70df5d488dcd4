"""Billing: hourly cost reports and the cost so far of an instance, from the usage events
in the store and the billing policy (a setting); the arithmetic is in ``metering``.

The store finds the running stretches itself (``runs``: two window functions over the
events, in SQL), so a report reads one row per run that touches its period, not every
event."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterator
from decimal import Decimal

from sqlalchemy import BigInteger, Integer, and_, cast, func, or_, select, type_coerce
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from . import metering
from computed.accounts.registry import Caller
from computed.clock import Clock
from computed.store.engine import Database
from computed.errors import InvalidParameterValue
from .gc_pause import paused_gc
from computed.compute.state import State
from computed.store.models import Instance, UsageEvent, UtcDateTime

MAX_PERIOD = dt.timedelta(days=366)
GROUPS = ("hour", "owner", "size", "tag")


class epoch_seconds(FunctionElement):
    """Whole seconds since the epoch of a UTC timestamp column, floored (as metering.epoch)."""
    type = BigInteger()
    name = "epoch_seconds"
    inherit_cache = True


@compiles(epoch_seconds, "sqlite")
def _epoch_seconds_sqlite(element, compiler, **kw):
    # stored as 'YYYY-MM-DD HH:MM:SS.ffffff': cut the fraction (strftime would round it to ms)
    [column] = element.clauses
    return compiler.process(cast(func.strftime("%s", func.substr(column, 1, 19)), Integer), **kw)


@compiles(epoch_seconds, "postgresql")
def _epoch_seconds_postgresql(element, compiler, **kw):
    [column] = element.clauses
    return compiler.process(cast(func.floor(func.extract("epoch", column)), BigInteger), **kw)


def runs_query(start: dt.datetime | None = None, end: dt.datetime | None = None,
               instance_ids: Collection[str] | None = None, owner: str | None = None):
    """The running stretches that touch [START, END) (all without a period), as metering.runs
    finds them: a run opens at a ``running`` event that follows any other state and closes
    at the next event after it that is not ``running``. One row per run: the opening event's
    billing facts and the run's start and end in epoch seconds (end NULL while running)."""
    e = UsageEvent
    marked = select(e.id, e.instance_id, e.state, e.at,
                    func.lag(e.state).over(partition_by=e.instance_id, order_by=e.id).label("prev"))
    if instance_ids is not None:
        marked = marked.where(e.instance_id.in_(list(instance_ids)))
    if owner is not None:  # an instance's events all carry its owner
        marked = marked.where(e.owner == owner)
    marked = marked.subquery("marked")
    opens = and_(marked.c.state == State.RUNNING, or_(marked.c.prev.is_(None), marked.c.prev != State.RUNNING))
    closes = and_(marked.c.state != State.RUNNING, marked.c.prev == State.RUNNING)
    edges = select(marked.c.id, marked.c.state, marked.c.at,
                   type_coerce(func.lead(marked.c.at).over(partition_by=marked.c.instance_id, order_by=marked.c.id),
                               UtcDateTime).label("until")
                   ).where(or_(opens, closes)).subquery("edges")
    q = (select(e.instance_id, e.owner, e.size, e.image, e.price_per_hour, e.currency, e.tags,
                epoch_seconds(edges.c.at).label("start"), epoch_seconds(edges.c.until).label("end"))
         .join(e, e.id == edges.c.id).where(edges.c.state == State.RUNNING)
         .order_by(e.instance_id, edges.c.id))  # metering.report_runs takes them by instance
    if end is not None:
        q = q.where(edges.c.at < end)
    if start is not None:
        q = q.where(or_(edges.c.until.is_(None), edges.c.until >= start, edges.c.at >= start))
    return q


class Billing:
    def __init__(self, db: Database, policy: str, clock: Clock):
        self.db = db
        self.policy = policy
        self.clock = clock

    def runs(self, start: dt.datetime | None = None, end: dt.datetime | None = None,
             instance_ids: Collection[str] | None = None, owner: str | None = None) -> Iterator[metering.Run]:
        usages: dict[tuple, metering.Usage] = {}  # one object per distinct set of facts
        with self.db.reading() as s:
            for iid, owner, size, image, price, currency, tags, run_start, run_end in s.execute(
                    runs_query(start, end, instance_ids, owner)):
                key = (owner, size, image, price, currency, tags)
                usage = usages.get(key)
                if usage is None:
                    usage = usages[key] = metering.Usage(owner, size, image, Decimal(price), currency,
                                                         metering.parse_tags(tags))
                # ordered by sequence, an end written with an earlier time (a clock stepped
                # back) makes an empty run, as metering.runs has it
                yield metering.Run(iid, run_start, None if run_end is None else max(run_end, run_start), usage)

    def report(self, caller: Caller, start: dt.datetime, end: dt.datetime,
               account: str | None = None) -> metering.Report:
        """The hourly cost report of the caller's own usage; an admin's covers every account,
        or only ACCOUNT (an account id) if given."""
        check_period(start, end)
        if account is not None and not caller.admin:
            raise InvalidParameterValue("only an admin reports on other accounts")
        owner = caller.scope if caller.scope is not None else account
        with paused_gc():
            return metering.report_runs(self.runs(start, end, owner=owner), start, end, self.policy,
                                        self.clock.now())

    def cost_so_far(self, inst: Instance) -> Decimal:
        """What the instance has cost from its launch until now."""
        return self.costs_so_far([inst])[inst.id]

    def costs_so_far(self, instances: Collection[Instance]) -> dict[str, Decimal]:
        """Instance id -> what it has cost from its launch until now, for a page of
        instances at once (one query, one pass)."""
        if not instances:
            return {}
        now = self.clock.now()
        start = metering.floor_hour(min(i.launch_time for i in instances))
        end = max(now, start) + dt.timedelta(seconds=1)
        with paused_gc():
            report = metering.report_runs(self.runs(instance_ids=[i.id for i in instances]), start, end,
                                          self.policy, now)
        costs = {i.id: Decimal(0) for i in instances}
        for row in report.rows:
            costs[row.instance_id] += row.cost
        return costs


def check_period(start: dt.datetime, end: dt.datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidParameterValue("start and end need a time zone (e.g. 2026-03-01T00:00:00Z)")
    if end <= start:
        raise InvalidParameterValue("end must be after start")
    if end - start > MAX_PERIOD:
        raise InvalidParameterValue("a report covers at most a year (366 days)")
