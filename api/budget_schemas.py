"""The schemas of ``/v1/budget`` (marshmallow): the document says what the core takes, and
an amount the core refuses is a 400 naming what is wrong, from the core's own check."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate

from computed.accounts.registry import ACCOUNT_ID
from computed.billing.budgets import (
    ACTIONS,
    AMOUNT,
    MAX_AMOUNT,
    MONTH,
    PLACES,
    THRESHOLDS,
    parse_amount,
)
from computed.errors import InvalidParameterValue

from .schemas import Pattern, QuerySchema

ACCOUNT_ID_PATTERN = f"^(?:{ACCOUNT_ID.pattern})$"
MONTH_PATTERN = f"^(?:{MONTH.pattern})$"
AMOUNT_PATTERN = f"^(?:{AMOUNT.pattern})$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"


def _amount(value: str) -> None:
    try:
        parse_amount(value)
    except InvalidParameterValue as e:
        raise ValidationError(e.message.removeprefix("amount: ")) from None


class AccountQuerySchema(QuerySchema):
    account = fields.String(validate=Pattern(ACCOUNT_ID_PATTERN, error="an account id: 12 digits"),
                            metadata={"description": "admins only: another account's budget (its 12-digit id); "
                                                     "anyone may name their own"})


class EventsQuerySchema(AccountQuerySchema):
    month = fields.String(validate=Pattern(MONTH_PATTERN, error="a calendar month such as 2026-12 (YYYY-MM)"),
                          metadata={"description": "YYYY-MM (UTC); default: this month", "example": "2026-12"})


class BudgetPutSchema(Schema):
    # the core's check says what is wrong (negative, too many places...); the document has its pattern
    amount = fields.String(required=True, validate=_amount, error_messages={
        "invalid": 'give it as a string, such as "25.00" (a JSON number would be a float)'}, metadata={
        "pattern": AMOUNT_PATTERN, "example": "25.00",
        "description": f"a month's budget as a decimal string: more than 0, at most {MAX_AMOUNT}, at most {PLACES} "
                       "decimal places (a string: a JSON number would be a float)"})
    action = fields.String(validate=validate.OneOf(ACTIONS), metadata={
        "description": "at 100%: notify (an event) or stop (also stop the account's running instances and refuse "
                       "launches and starts while the spend is at or over the budget); default: the budget's "
                       "current action, notify for a new one"})
    currency = fields.String(validate=Pattern(CURRENCY_PATTERN, error="a currency code such as USD"), metadata={
        "description": "the price catalog's currency (the default); another is refused"})


class BudgetEventSchema(Schema):
    id = fields.Integer(required=True)
    account_id = fields.String(required=True)
    month = fields.String(required=True, metadata={"example": "2026-12"})
    threshold = fields.Integer(required=True, validate=validate.OneOf(THRESHOLDS),
                               metadata={"description": "percent of the budget reached"})
    amount = fields.String(required=True, metadata={"description": "the budget then (exact decimal)"})
    currency = fields.String(required=True)
    spend = fields.String(required=True, metadata={"description": "the month's spend then (exact decimal)"})
    at = fields.DateTime(required=True)
    instances_stopped = fields.List(fields.String(), allow_none=True, metadata={
        "description": "the instances the budget's stop action stopped; null if it did not run (action notify)"})


class BudgetEventListSchema(Schema):
    account_id = fields.String(required=True)
    month = fields.String(required=True)
    events = fields.List(fields.Nested(BudgetEventSchema), required=True)


class BudgetSchema(Schema):
    account_id = fields.String(required=True)
    account_name = fields.String(required=True)
    amount = fields.String(required=True, metadata={"description": "exact decimal, a month's budget"})
    currency = fields.String(required=True)
    action = fields.String(required=True, validate=validate.OneOf(ACTIONS))
    month = fields.String(required=True, metadata={"description": "this calendar month (UTC), YYYY-MM"})
    spend = fields.String(required=True, metadata={
        "description": "the account's cost this month so far (from the 1st 00:00 UTC, running instances up to "
                       "now), exact decimal"})
    percent = fields.String(required=True, metadata={"description": "spend / amount x 100, two places, rounded "
                                                                    "down"})
    over = fields.Boolean(required=True, metadata={"description": "the spend is at or over the budget"})
    launches_refused = fields.Boolean(required=True, metadata={
        "description": "launching and starting the account's instances is refused now (over, action stop)"})
    events = fields.List(fields.Nested(BudgetEventSchema), required=True, metadata={
        "description": "this month's events"})
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)
