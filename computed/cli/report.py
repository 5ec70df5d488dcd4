"""``computed report``: the hourly cost report from the API, as a table, CSV, JSON or PNG."""

from __future__ import annotations

import datetime as dt
import json
import sys

import click
from rich.console import Console
from rich.table import Table

from .client import ApiClient, with_client

FORMATS = ("table", "csv", "json", "png")


def _when(value: str) -> str:
    """An ISO 8601 time (UTC if no zone given), or today/yesterday/now."""
    now = dt.datetime.now(dt.UTC)
    named = {"now": now, "today": now.replace(hour=0, minute=0, second=0, microsecond=0)}
    named["yesterday"] = named["today"] - dt.timedelta(days=1)
    if value in named:
        t = named[value]
    else:
        try:
            t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a time like 2026-03-01 or 2026-03-01T10:00Z") from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.UTC)
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@click.command()
@click.option("--from", "start", required=True, metavar="TIME", help="Start (ISO 8601, UTC unless given; or today).")
@click.option("--to", "end", required=True, metavar="TIME", help="End, exclusive (ISO 8601; or now).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True),
              help="Write to FILE instead of standard output (png needs it unless piped).")
@click.option("--account", metavar="ID", help="Admins: only this account's usage (its 12-digit id).")
@with_client
def report(client: ApiClient, start: str, end: str, fmt: str, output: str | None, account: str | None) -> None:
    """The hourly cost report of your usage (an admin's: every account's): one row per
    instance per UTC hour, and totals."""
    params = {"start": _when(start), "end": _when(end)} | ({"account": account} if account else {})
    if fmt in ("csv", "png"):
        data = client.get_bytes("/v1/billing/report", format=fmt, **params)
        if fmt == "png" and output is None and sys.stdout.isatty():
            raise click.UsageError("a PNG goes to a file: add --output FILE (or pipe the output)")
        _write(data, output)
        return
    body = client.get("/v1/billing/report", **params)
    if fmt == "json":
        _write((json.dumps(body, indent=2) + "\n").encode(), output)
        return
    if output:
        with open(output, "w") as f:
            _print_table(body, Console(file=f, width=200))
        click.echo(f"wrote {output}", err=True)
    else:
        _print_table(body, Console())


def _print_table(body: dict, console: Console) -> None:
    table = Table(title=f"Cost {body['start']} to {body['end']} ({body['policy']} billing)", box=None)
    for col, justify in (("hour (UTC)", "left"), ("instance", "left"), ("size", "left"), ("owner", "left"),
                         ("running s", "right"), (body["unit"], "right"), ("rate/h", "right"), ("cost", "right"),
                         ("tags", "left")):
        table.add_column(col, justify=justify)
    for r in body["rows"]:
        tags = ",".join(f"{k}={v}" for k, v in sorted(r["tags"].items()))
        table.add_row(r["hour"][:16].replace("T", " "), r["instance_id"], r["size"], r["owner"],
                      str(r["seconds_running"]), r["quantity"], r["rate_per_hour"], f"{r['cost']} {r['currency']}",
                      tags)
    console.print(table)
    for total in body["total"]:
        console.print(f"[bold]total: {total['cost']} {total['currency']}[/bold]")
    for group in ("size", "owner", "tag"):
        entries = body["totals"].get(group) or []
        if entries:
            console.print(f"by {group}: " + ", ".join(f"{e['key']} {e['cost']} {e['currency']}" for e in entries))
    if not body["rows"]:
        console.print("no usage in this period")


def _write(data: bytes, output: str | None) -> None:
    if output:
        with open(output, "wb") as f:
            f.write(data)
        click.echo(f"wrote {output}", err=True)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
