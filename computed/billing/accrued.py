"""The cost every account has accrued, from the first usage event until now, per currency:
what a billing report over all time would total, cheap enough to ask every few seconds
(a Prometheus scrape).

Billing reports over adjacent periods add up exactly, and a report over a period that ended
more than a minute ago never changes (per-second billing's top-up of a run shorter than a
minute is billed once the run has ended). So the cost before a settled clock hour is kept
(per process; it follows from the store, so every process keeps the same) and each call bills
only the time since, and only for the instances that may have run then: those that are not
terminated and those terminated since. The first call bills every run once, as a report over
all time would; the hour it keeps moves on as the clock does."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from decimal import Decimal
from itertools import chain

from sqlalchemy import select

from . import metering
from .reports import Billing
from computed.store.engine import Database
from .gc_pause import paused_gc
from computed.compute.state import State
from computed.store.models import Instance, UsageEvent

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
#: how long after an hour its cost is taken as settled: well past the minute a per-second
#: top-up may take, and a margin for events written by a process whose clock is a little behind
SETTLE = dt.timedelta(minutes=5)
#: instance ids per query of their runs (an IN list well under any database's limit)
CHUNK = 500


class AccruedCost:
    def __init__(self, db: Database, billing: Billing):
        self.db = db
        self.billing = billing
        self._lock = threading.Lock()
        #: the cost of all usage before _settled, by currency
        self._kept: dict[str, Decimal] = {}
        self._settled: dt.datetime | None = None

    def totals(self) -> dict[str, Decimal]:
        """Currency -> the cost of all usage so far."""
        with self._lock:
            now = self.billing.clock.now()
            settled = metering.floor_hour(now - SETTLE)
            if self._settled is None:
                self._kept = self._bill(None, EPOCH, settled, now)
                self._settled = settled
            elif settled > self._settled:
                self._kept = _add(self._kept, self._bill(self._active(self._settled), self._settled, settled, now))
                self._settled = settled
            return _add(self._kept, self._bill(self._active(self._settled), self._settled,
                                               now + dt.timedelta(seconds=1), now))

    def _active(self, since: dt.datetime) -> set[str]:
        """The instances that may have run since SINCE: those not terminated, and those
        terminated since."""
        with self.db.reading() as s:
            live = s.scalars(select(Instance.id).where(Instance.state != State.TERMINATED))
            ended = s.scalars(select(UsageEvent.instance_id).distinct()
                              .where(UsageEvent.state == State.TERMINATED, UsageEvent.at >= since))
            return set(live) | set(ended)

    def _bill(self, instance_ids: set[str] | None, start: dt.datetime, end: dt.datetime,
              now: dt.datetime) -> dict[str, Decimal]:
        """Currency -> the cost in [START, END) of INSTANCE_IDS (None: of all)."""
        with paused_gc():
            return metering.report_runs(self._runs(instance_ids, start, end), start, end, self.billing.policy,
                                        now).total()

    def _runs(self, instance_ids: set[str] | None, start: dt.datetime, end: dt.datetime) -> Iterator[metering.Run]:
        if instance_ids is None:
            return self.billing.runs(start, end)
        ids = sorted(instance_ids)  # each chunk's runs come by instance, and no instance is in two
        return chain.from_iterable(self.billing.runs(start, end, instance_ids=ids[i:i + CHUNK])
                                   for i in range(0, len(ids), CHUNK))


def _add(a: dict[str, Decimal], b: dict[str, Decimal]) -> dict[str, Decimal]:
    return {currency: a.get(currency, Decimal(0)) + b.get(currency, Decimal(0)) for currency in a.keys() | b.keys()}
