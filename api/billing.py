"""``/v1/billing/report``: the hourly cost report as JSON or CSV (AWS Cost and Usage Report
column names where one fits)."""

from __future__ import annotations

import csv
import io

from flask import Response
from marshmallow import RAISE

from computed.billing.chart import cost_chart_png
from computed.billing.metering import Report

from .blueprint import Blueprint
from .schemas import BillingQuerySchema, BillingReportSchema, ErrorResponseSchema
from .auth import current_caller
from .service import service

blp = Blueprint("billing", __name__, url_prefix="/v1/billing", description="Usage and cost")

CSV_COLUMNS = ("identity/TimeInterval", "lineItem/UsageStartDate", "lineItem/UsageEndDate", "lineItem/ResourceId",
               "lineItem/UsageType", "lineItem/UsageAmount", "lineItem/UnblendedRate", "lineItem/UnblendedCost",
               "lineItem/CurrencyCode", "product/instanceType", "product/image", "lineItem/UsageAccountId",
               "computed/SecondsRunning", "pricing/unit")


def _iso(t) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _grouped(totals: dict) -> list[dict]:
    return [{"key": key if isinstance(key, str) else _iso(key), "currency": currency, "cost": str(cost)}
            for (key, currency), cost in sorted(totals.items(), key=lambda kv: (str(kv[0][0]), kv[0][1]))]


def as_json(report: Report, group_by: list[str]) -> dict:
    groups = {"hour": report.by_hour, "owner": report.by_owner, "size": report.by_size, "tag": report.by_tag}
    unit = "instance-hours" if report.policy == "hourly" else "seconds"
    return {
        "start": report.start, "end": report.end, "policy": report.policy, "unit": unit,
        "rows": [{"hour": r.hour, "instance_id": r.instance_id, "owner": r.owner, "size": r.size, "image": r.image,
                  "tags": dict(r.tags), "seconds_running": r.seconds_running, "quantity": str(r.quantity),
                  "rate_per_hour": str(r.rate), "cost": str(r.cost), "currency": r.currency} for r in report.rows],
        "total": [{"currency": c, "cost": str(v)} for c, v in sorted(report.total().items())],
        "totals": {g: _grouped(groups[g]()) for g in group_by},
    }


#: a spreadsheet takes a cell starting with one of these for a formula (OWASP's list)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value) -> str:
    """VALUE as a CSV cell a spreadsheet shows as text: one that would start a formula (a
    tenant's tag ``=HYPERLINK(...)``) gets a leading ``'``, as OWASP recommends."""
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def as_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    tag_keys = sorted({k for r in report.rows for k, _ in r.tags})
    writer.writerow(CSV_COLUMNS + tuple(_cell(f"resourceTags/user:{k}") for k in tag_keys))
    usage_type = "BoxUsage" if report.policy == "hourly" else "BoxUsage:PerSecond"
    unit = "Hrs" if report.policy == "hourly" else "Seconds"
    for r in report.rows:
        end = r.hour.replace(minute=59, second=59)
        tags = dict(r.tags)
        writer.writerow(_cell(v) for v in (
            (f"{_iso(r.hour)}/{_iso(end)}", _iso(r.hour), _iso(end), r.instance_id, f"{usage_type}:{r.size}",
             r.quantity, r.rate, r.cost, r.currency, r.size, r.image, r.owner, r.seconds_running, unit)
            + tuple(tags.get(k, "") for k in tag_keys)))
    return out.getvalue()


#: the other formats of the report's 200 (flask-smorest documents one content type per response)
OTHER_FORMATS = {200: {"content": {
    "text/csv": {"schema": {"type": "string", "description": "format=csv: the AWS Cost and Usage Report's columns"}},
    "image/png": {"schema": {"type": "string", "format": "binary", "description": "format=png: a chart"}},
}}}


@blp.route("/report")
@blp.arguments(BillingQuerySchema, location="query", error_status_code=400, unknown=RAISE)
@blp.response(200, BillingReportSchema)
@blp.alt_response(400, schema=ErrorResponseSchema)
@blp.doc(responses=OTHER_FORMATS)
def report(args):
    """The hourly cost report for [start, end): one row per instance per UTC clock hour,
    with totals; ``format=csv`` for a CSV in the AWS Cost and Usage Report's columns,
    ``format=png`` for a chart of cost per hour stacked by size. It covers the caller's own
    usage; an admin's covers every account, or the one named by ``account``."""
    result = service().billing.report(current_caller(), args["start"], args["end"], args.get("account"))
    if args["format"] == "png":
        return Response(cost_chart_png(result), mimetype="image/png")
    if args["format"] == "csv":
        return Response(as_csv(result), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=computed-cost-report.csv"})
    return as_json(result, args["group_by"])
