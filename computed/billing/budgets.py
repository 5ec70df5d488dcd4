"""Monthly budgets. An account sets an amount, in the price catalog's currency, and an
action: ``notify`` or ``stop``. Its spend this month is what billing reports for it from
the 1st 00:00 UTC to now (``billing.Billing.runs`` and ``metering.report_runs``: running
instances count up to now), in the budget's currency.

``check`` (every ``budget_check_interval`` seconds from each service process's
housekeeping, or called directly) records an event when the spend reaches 80% and 100% of
the budget: once per account, calendar month and threshold, which the store's unique key
keeps true however many processes check at once (an insert that meets the key is another
process having recorded it). At 100%, with the action ``stop``, the account's running
instances are stopped through the usual lifecycle with the state reason
``Client.BudgetExceeded``; every later check of the month stops those that came up since
(a launch that was pending then, say) and adds them to the event.

While the month's spend is at or over a ``stop`` budget, launching and starting the
account's instances is refused with ``BudgetExceeded`` (409), asked of the store at each
request (``admission``): raising the budget, removing it, making it ``notify`` or the next
month lifts that at once. A budget changed mid-month counts from the next check; thresholds
recorded this month are not recorded again."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal, InvalidOperation

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .admission import BudgetAdmission, month_of
from computed.accounts.registry import Caller, addressed_account, shown
from .reports import Billing
from computed.clock import Clock
from computed.store.engine import Database
from computed.errors import (
    AccountNotFound,
    BudgetNotFound,
    ComputedError,
    InvalidParameterValue,
)
from computed.compute.instances import Instances
from computed.store.models import Account, Budget, BudgetEvent, Instance
from computed.compute.sizes import SizeCatalog
from computed.compute.state import Reason, State

log = logging.getLogger(__name__)

ACTIONS = ("notify", "stop")
THRESHOLDS = (80, 100)
#: an amount: digits, and at most PLACES after a decimal point; more than 0, at most MAX_AMOUNT
PLACES = 2
MAX_AMOUNT = Decimal("999999999999.99")
AMOUNT = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,2})?")  # PLACES, and MAX_AMOUNT's 12 digits
MONTH = re.compile(r"[1-9][0-9]{3}-(?:0[1-9]|1[0-2])")
STOPPED_CODE = "Client.BudgetExceeded"


def parse_amount(value: object) -> Decimal:
    """A budget's amount: a decimal number given as a string (or a whole number), more than
    0, at most MAX_AMOUNT, with at most PLACES decimal places; InvalidParameterValue saying
    what is wrong otherwise."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidParameterValue('amount: give it as a string of digits, such as "25.00" (a JSON number with '
                                    "a fraction would go through binary floating point)")
    text = str(value)
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise InvalidParameterValue(f"amount: {shown(text)} is not a decimal number (write it like 25.00)") from None
    if not amount.is_finite():
        raise InvalidParameterValue("amount: must be a finite number")
    if amount < 0:
        raise InvalidParameterValue("amount: must not be negative")
    if amount == 0:
        raise InvalidParameterValue("amount: must be more than 0 (to stop spending, use a small budget with the "
                                    "action stop)")
    if amount > MAX_AMOUNT:
        raise InvalidParameterValue(f"amount: at most {MAX_AMOUNT}")
    if amount.as_tuple().exponent < -PLACES:
        raise InvalidParameterValue(f"amount: at most {PLACES} decimal places")
    if not AMOUNT.fullmatch(text):
        raise InvalidParameterValue(f"amount: {shown(text)}: write digits with an optional decimal point, "
                                    "such as 25.00 (no sign, exponent, spaces or separators)")
    return amount


def plain(amount: Decimal) -> str:
    """AMOUNT as text without an exponent (a sum of nothing may be 0E-12)."""
    return f"{amount:f}"


def check_action(action: object) -> str:
    if action not in ACTIONS:
        raise InvalidParameterValue(f"action: must be one of {', '.join(ACTIONS)}")
    return action


def check_month(month: object) -> str:
    if not isinstance(month, str) or not MONTH.fullmatch(month):
        raise InvalidParameterValue("month: a calendar month such as 2026-12 (YYYY-MM)")
    return month


@dataclass(frozen=True)
class Status:
    """A budget, its account's spend this month and the events of this month."""
    budget: Budget
    account_name: str
    month: str
    spend: Decimal
    events: list[BudgetEvent]

    @property
    def amount(self) -> Decimal:
        return Decimal(self.budget.amount)

    @property
    def percent(self) -> Decimal:
        """The spend as a percentage of the budget, to two places, rounded down (so 80.00
        only once 80% is reached)."""
        return (self.spend * 100 / self.amount).quantize(Decimal("0.01"), rounding=ROUND_DOWN)

    @property
    def over(self) -> bool:
        return self.spend >= self.amount

    @property
    def refusing(self) -> bool:
        """Whether launches and starts of the account's instances are refused now."""
        return self.over and self.budget.action == "stop"


def stopped_ids(event: BudgetEvent) -> list[str] | None:
    return None if event.instances_stopped is None else json.loads(event.instances_stopped)


class Budgets:
    def __init__(self, db: Database, billing: Billing, instances: Instances, sizes: SizeCatalog, clock: Clock,
                 admission: BudgetAdmission | None = None):
        self.db = db
        self.billing = billing
        self.instances = instances
        self.sizes = sizes
        self.clock = clock
        #: the spend a budget is checked against (the one launches and starts are admitted by)
        self.admission = admission or BudgetAdmission(db, billing, clock)

    # -- what an account asks for --------------------------------------------------------

    def currency(self) -> str | None:
        """The price catalog's currency (None if its sizes have several)."""
        found = {s.currency for s in self.sizes.all()}
        return found.pop() if len(found) == 1 else None

    def set(self, caller: Caller, account_id: str | None, amount: object, action: str | None = None,
            currency: str | None = None) -> Status:
        """Set (or replace) the budget of the caller's account, or an admin's of ACCOUNT_ID.
        ACTION None keeps the budget's action (notify for a new budget); CURRENCY None is
        the catalog's, and another than the catalog's is refused."""
        value = parse_amount(amount)
        if action is not None:
            check_action(action)
        catalog = self.currency()
        known = sorted({s.currency for s in self.sizes.all()})
        if currency is None:
            if catalog is None:
                raise InvalidParameterValue(f"currency: the price catalog has several ({', '.join(known)}): "
                                            "name the budget's")
            currency = catalog
        elif currency not in known:
            raise InvalidParameterValue(f"currency: the price catalog's is {', '.join(known)}, not {shown(currency)} "
                                        "(a budget is in the currency its spend is billed in)")
        now = self.clock.now()
        with self.db.session() as s:
            account = addressed_account(s, caller, account_id, "see or change another account's budget")
            budget = s.get(Budget, account.id)
            if budget is None:
                budget = Budget(account_id=account.id, action="notify", created_at=now)
                s.add(budget)
            budget.amount, budget.currency, budget.updated_at = str(value), currency, now
            if action is not None:
                budget.action = action
        return self._status(budget, account.name, now)

    def get(self, caller: Caller, account_id: str | None = None) -> Status:
        with self.db.reading() as s:
            account = addressed_account(s, caller, account_id, "see or change another account's budget")
            budget = s.get(Budget, account.id)
        if budget is None:
            raise BudgetNotFound(f"the account {account.name} has no budget (set one with PUT /v1/budget)")
        return self._status(budget, account.name, self.clock.now())

    def remove(self, caller: Caller, account_id: str | None = None) -> None:
        """Remove the budget (its events stay); what it refused is allowed again at once."""
        with self.db.session() as s:
            account = addressed_account(s, caller, account_id, "see or change another account's budget")
            budget = s.get(Budget, account.id)
            if budget is None:
                raise BudgetNotFound(f"the account {account.name} has no budget")
            s.delete(budget)

    def events(self, caller: Caller, account_id: str | None = None,
               month: str | None = None) -> tuple[str, list[BudgetEvent]]:
        """(month, the events recorded for the account in MONTH, this month by default),
        whether or not it still has a budget."""
        month = check_month(month) if month is not None else month_of(self.clock.now())
        with self.db.reading() as s:
            account = addressed_account(s, caller, account_id, "see or change another account's budget")
            return month, self._events(s, account.id, month)

    @staticmethod
    def _events(s: Session, account_id: str, month: str) -> list[BudgetEvent]:
        return list(s.scalars(select(BudgetEvent).where(BudgetEvent.account_id == account_id,
                                                        BudgetEvent.month == month)
                              .order_by(BudgetEvent.threshold, BudgetEvent.id)))

    def _status(self, budget: Budget, account_name: str, now: dt.datetime) -> Status:
        month = month_of(now)
        spend = self.admission.spend(budget.account_id, budget.currency, now)
        with self.db.reading() as s:
            events = self._events(s, budget.account_id, month)
        return Status(budget, account_name, month, spend, events)

    # -- the periodic check ------------------------------------------------------------

    def check(self) -> list[BudgetEvent]:
        """Check every budget now: the events this call recorded (another process may have
        recorded some first: those are not in the list, and are not recorded twice)."""
        now = self.clock.now()
        with self.db.reading() as s:
            budgets = list(s.scalars(select(Budget).order_by(Budget.account_id)))
        recorded = []
        for budget in budgets:
            try:
                recorded += self._check(budget, now)
            except Exception:  # one account's failure leaves the others checked
                log.exception("checking the budget of account %s failed", budget.account_id)
        return recorded

    def _check(self, budget: Budget, now: dt.datetime) -> list[BudgetEvent]:
        month, amount = month_of(now), Decimal(budget.amount)
        spend = self.admission.spend(budget.account_id, budget.currency, now)
        with self.db.reading() as s:
            earlier = {e.threshold: e for e in self._events(s, budget.account_id, month)}
        recorded = []
        for threshold in THRESHOLDS:
            if spend * 100 < amount * threshold:
                break
            stopped = None
            if threshold == 100 and budget.action == "stop":
                stopped = self._stop_running(budget, month, spend)
            if threshold in earlier and (stopped is None or not stopped and stopped_ids(earlier[threshold]) is not None):
                continue  # recorded, and nothing to add (a check writes only when something happened)
            event = self._record(budget, month, threshold, spend, now, stopped)
            if event is not None:
                log.info("account %s reached %d%% of its budget for %s: %s of %s %s%s", budget.account_id,
                         threshold, month, spend, amount, budget.currency,
                         f"; stopped {', '.join(stopped) or 'nothing'}" if stopped is not None else "")
                recorded.append(event)
        return recorded

    def _stop_running(self, budget: Budget, month: str, spend: Decimal) -> list[str]:
        """Stop every running instance of the budget's account; the ids of those this call
        stopped (one another process stopped meanwhile is its own)."""
        with self.db.reading() as s:
            ids = list(s.scalars(select(Instance.id).where(Instance.owner == budget.account_id,
                                                           Instance.state == State.RUNNING).order_by(Instance.id)))
        why = f"stopped by the account's monthly budget of {budget.amount} {budget.currency}: {spend} spent in {month}"
        reason = Reason(STOPPED_CODE, why)
        owner = Caller(budget.account_id, "budget")
        stopped = []
        for instance_id in ids:  # one by one: an unreachable host holds up its instances only
            try:
                [(_, previous)] = self.instances.change(owner, "stop", [instance_id], reason=reason)
            except ComputedError as e:  # its host is unreachable, or it moved on: the next check sees
                log.warning("the budget of account %s could not stop %s: %s", budget.account_id, instance_id,
                            e.message)
                continue
            if previous == State.RUNNING:
                stopped.append(instance_id)
        return stopped

    def _record(self, budget: Budget, month: str, threshold: int, spend: Decimal, now: dt.datetime,
                stopped: list[str] | None) -> BudgetEvent | None:
        """Record the account's event for MONTH and THRESHOLD unless there is one, in which
        case the instances STOPPED are added to it; the event if this call recorded it."""
        try:
            with self.db.session() as s:
                event = self._event(s, budget.account_id, month, threshold)
                if event is None:
                    event = BudgetEvent(account_id=budget.account_id, month=month, threshold=threshold,
                                        amount=budget.amount, currency=budget.currency, spend=plain(spend), at=now,
                                        instances_stopped=None if stopped is None else json.dumps(stopped))
                    s.add(event)
                    return event
                _add_stopped(event, stopped)
                return None
        except IntegrityError:
            # the unique key: another process recorded it between this one's look and insert
            # (the store's writers take turns, so only a writer that does not could): no error
            log.info("another process recorded the %d%% event of account %s for %s", threshold, budget.account_id,
                     month)
        if stopped is not None:
            with self.db.session() as s:
                event = self._event(s, budget.account_id, month, threshold)
                if event is not None:
                    _add_stopped(event, stopped)
        return None

    @staticmethod
    def _event(s: Session, account_id: str, month: str, threshold: int) -> BudgetEvent | None:
        return s.scalar(select(BudgetEvent).where(BudgetEvent.account_id == account_id, BudgetEvent.month == month,
                                                  BudgetEvent.threshold == threshold))


def _add_stopped(event: BudgetEvent, stopped: list[str] | None) -> None:
    """Add the instances STOPPED (None: the action did not run) to EVENT's list."""
    if stopped is None:
        return
    earlier = stopped_ids(event)
    merged = (earlier or []) + [i for i in stopped if i not in (earlier or [])]
    if merged != earlier:
        event.instances_stopped = json.dumps(merged)
