"""An account's spend this month and the admission a ``stop`` budget gives: while the
spend is at or over such a budget, launching and starting the account's instances is
refused with ``BudgetExceeded``. ``Instances`` asks before each launch and start
(``admit``); ``budgets.Budgets`` checks budgets against the same spend. Built before
either, so that neither needs the other to exist first."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from . import metering
from .reports import Billing
from computed.clock import Clock
from computed.store.engine import Database
from computed.errors import BudgetExceeded
from .gc_pause import paused_gc
from computed.store.models import Account, Budget


def month_of(t: dt.datetime) -> str:
    """The calendar month (UTC) of T, as YYYY-MM."""
    t = t.astimezone(dt.UTC)
    return f"{t.year:04d}-{t.month:02d}"


def month_start(month: str) -> dt.datetime:
    year, number = (int(p) for p in month.split("-"))
    return dt.datetime(year, number, 1, tzinfo=dt.UTC)


def next_month_start(month: str) -> dt.datetime:
    start = month_start(month)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


class BudgetAdmission:
    def __init__(self, db: Database, billing: Billing, clock: Clock):
        self.db = db
        self.billing = billing
        self.clock = clock

    def spend(self, account_id: str, currency: str, now: dt.datetime) -> Decimal:
        """What the account's instances cost, in CURRENCY, from the start of NOW's calendar
        month (UTC) to NOW: billing's report of those days, billed up to now."""
        start = month_start(month_of(now))
        end = now + dt.timedelta(seconds=1)  # the second now is in, as Billing.costs_so_far
        with paused_gc():
            report = metering.report_runs(self.billing.runs(start, end, owner=account_id), start, end,
                                          self.billing.policy, now)
        return report.total().get(currency, Decimal(0))

    def admit(self, account_id: str) -> None:
        """BudgetExceeded if the account's budget has the action stop and this month's
        spend is at or over it (Instances asks before a launch or a start)."""
        with self.db.reading() as s:
            budget = s.get(Budget, account_id)
            if budget is None or budget.action != "stop":
                return
            account = s.get(Account, account_id)
        now = self.clock.now()
        month, amount = month_of(now), Decimal(budget.amount)
        spend = self.spend(account_id, budget.currency, now)
        if spend >= amount:
            name = account.name if account is not None else account_id
            lifted = next_month_start(month).strftime("%Y-%m-%d %H:%M UTC")
            raise BudgetExceeded(
                f"the account {name} has spent {spend} {budget.currency} in {month}, its monthly budget of "
                f"{amount} {budget.currency} or more, and the budget's action is stop: no instance of it is "
                f"launched or started until the budget is raised or removed, or its action is notify, or the "
                f"month ends ({lifted})")
