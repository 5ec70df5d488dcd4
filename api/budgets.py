"""``/v1/budget``: the caller's monthly budget (an admin's: any account's, with
``?account=ID``, as ``/v1/billing/report`` has it): show it with this month's spend and
events, set it, remove it, and list a month's events."""

from __future__ import annotations

from flask.views import MethodView
from marshmallow import RAISE

from computed.billing.budgets import Status, plain, stopped_ids
from computed.store.models import BudgetEvent

from .auth import current_caller
from .blueprint import Blueprint
from .budget_schemas import (
    AccountQuerySchema,
    BudgetEventListSchema,
    BudgetPutSchema,
    BudgetSchema,
    EventsQuerySchema,
)
from .schemas import ErrorResponseSchema
from .service import service

blp = Blueprint("budget", __name__, url_prefix="/v1/budget", description="Monthly budget")


def event_view(e: BudgetEvent) -> dict:
    return {"id": e.id, "account_id": e.account_id, "month": e.month, "threshold": e.threshold, "amount": e.amount,
            "currency": e.currency, "spend": e.spend, "at": e.at, "instances_stopped": stopped_ids(e)}


def view(status: Status) -> dict:
    b = status.budget
    return {"account_id": b.account_id, "account_name": status.account_name, "amount": b.amount,
            "currency": b.currency, "action": b.action, "month": status.month, "spend": plain(status.spend),
            "percent": str(status.percent), "over": status.over, "launches_refused": status.refusing,
            "events": [event_view(e) for e in status.events], "created_at": b.created_at,
            "updated_at": b.updated_at}


@blp.route("")
class Budget(MethodView):
    @blp.arguments(AccountQuerySchema, location="query", error_status_code=400, unknown=RAISE)
    @blp.response(200, BudgetSchema)
    @blp.alt_response(400, schema=ErrorResponseSchema)
    @blp.alt_response(403, schema=ErrorResponseSchema)
    @blp.alt_response(404, schema=ErrorResponseSchema)
    def get(self, args):
        """The account's monthly budget, its spend this calendar month (UTC, running
        instances up to now), the percentage, and this month's events. 404 if it has none."""
        return view(service().budgets.get(current_caller(), args.get("account")))

    @blp.arguments(AccountQuerySchema, location="query", error_status_code=400, unknown=RAISE)
    @blp.arguments(BudgetPutSchema, error_status_code=400)
    @blp.response(200, BudgetSchema)
    @blp.alt_response(400, schema=ErrorResponseSchema)
    @blp.alt_response(403, schema=ErrorResponseSchema)
    @blp.alt_response(404, schema=ErrorResponseSchema)
    @blp.alt_response(413, schema=ErrorResponseSchema)
    @blp.alt_response(415, schema=ErrorResponseSchema)
    def put(self, args, body):
        """Set or replace the budget: events at 80% and 100% of it, once a month each; at
        100% with ``action`` stop the account's running instances are stopped and launches
        and starts are refused (409 ``BudgetExceeded``) while the spend is at or over it. A
        change counts from the next check (thresholds recorded this month are not recorded
        again); launches and starts are allowed again at once when it is raised."""
        return view(service().budgets.set(current_caller(), args.get("account"), body["amount"], body.get("action"),
                                          body.get("currency")))

    @blp.arguments(AccountQuerySchema, location="query", error_status_code=400, unknown=RAISE)
    @blp.response(204)
    @blp.alt_response(400, schema=ErrorResponseSchema)
    @blp.alt_response(403, schema=ErrorResponseSchema)
    @blp.alt_response(404, schema=ErrorResponseSchema)
    def delete(self, args):
        """Remove the budget (its events stay): nothing is refused for it any more."""
        service().budgets.remove(current_caller(), args.get("account"))


@blp.route("/events")
@blp.arguments(EventsQuerySchema, location="query", error_status_code=400, unknown=RAISE)
@blp.response(200, BudgetEventListSchema)
@blp.alt_response(400, schema=ErrorResponseSchema)
@blp.alt_response(403, schema=ErrorResponseSchema)
@blp.alt_response(404, schema=ErrorResponseSchema)
def events(args):
    """The budget events of a calendar month (``month``, YYYY-MM; this month by default),
    by threshold: kept when the budget is changed or removed."""
    svc, caller = service(), current_caller()
    month, found = svc.budgets.events(caller, args.get("account"), args.get("month"))
    return {"account_id": args.get("account") or caller.account_id, "month": month,
            "events": [event_view(e) for e in found]}
