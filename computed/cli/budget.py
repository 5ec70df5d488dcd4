"""``computed budget set|show|events|rm``: the account's monthly budget, through the REST
API (``/v1/budget``)."""

from __future__ import annotations

import json

import click

from .client import ApiClient, with_client

ACCOUNT_HELP = "Admins: another account's budget (its 12-digit id)."


def _params(account: str | None) -> dict:
    return {"account": account} if account else {}


def _summary(body: dict) -> str:
    line = (f"budget {body['amount']} {body['currency']} a month, action {body['action']}; "
            f"{body['month']}: spent {body['spend']} {body['currency']} ({body['percent']}%)")
    if body["launches_refused"]:
        line += "; launches and starts refused"
    return line


def _event_line(e: dict) -> str:
    line = f"{e['month']}  {e['threshold']:>3}%  {e['at'][:19].replace('T', ' ')}  spent {e['spend']} of " \
           f"{e['amount']} {e['currency']}"
    if e["instances_stopped"] is not None:
        line += f"  stopped: {', '.join(e['instances_stopped']) or 'none running'}"
    return line


@click.group()
def budget() -> None:
    """Your account's monthly budget: events at 80% and 100% of it, and optionally stopping
    your instances at 100%."""


@budget.command("set")
@click.argument("amount")
@click.option("--stop", "action", flag_value="stop",
              help="At 100%: stop the running instances and refuse launches and starts until the month ends "
                   "or the budget is raised.")
@click.option("--notify", "action", flag_value="notify", help="At 100%: only record the event.")
@click.option("--account", metavar="ID", help=ACCOUNT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the budget as JSON.")
@with_client
def set_(client: ApiClient, amount: str, action: str | None, account: str | None, as_json: bool) -> None:
    """Set the monthly budget to AMOUNT (in the price catalog's currency, e.g. 25.00). Without
    --stop or --notify a budget keeps its action (a new one notifies)."""
    body = {"amount": amount} | ({"action": action} if action else {})
    result = client.request("PUT", "/v1/budget", json=body, params=_params(account))
    click.echo(json.dumps(result, indent=2) if as_json else _summary(result))


@budget.command()
@click.option("--account", metavar="ID", help=ACCOUNT_HELP)
@click.option("--json", "as_json", is_flag=True, help="JSON instead of text.")
@with_client
def show(client: ApiClient, account: str | None, as_json: bool) -> None:
    """The budget, this month's spend and this month's events."""
    result = client.get("/v1/budget", **_params(account))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(_summary(result))
    for e in result["events"]:
        click.echo(_event_line(e))


@budget.command()
@click.option("--month", metavar="YYYY-MM", help="A calendar month (UTC); default: this month.")
@click.option("--account", metavar="ID", help=ACCOUNT_HELP)
@click.option("--json", "as_json", is_flag=True, help="JSON instead of text.")
@with_client
def events(client: ApiClient, month: str | None, account: str | None, as_json: bool) -> None:
    """The events of a month: when the spend reached 80% and 100% of the budget."""
    result = client.get("/v1/budget/events", month=month, **_params(account))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    for e in result["events"]:
        click.echo(_event_line(e))
    if not result["events"]:
        click.echo(f"no budget events in {result['month']}", err=True)


@budget.command("rm")
@click.option("--account", metavar="ID", help=ACCOUNT_HELP)
@with_client
def rm(client: ApiClient, account: str | None) -> None:
    """Remove the budget (its events stay)."""
    client.request("DELETE", "/v1/budget", params=_params(account))
    click.echo("removed the budget", err=True)
