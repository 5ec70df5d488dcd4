"""``computed account create|ls``: accounts, made directly in the store (an operator's
command, run where the service runs; no API call, so it works before any account exists,
and gives an account locked out of the API a way back: a new admin). ``computed account
access-key ...`` (``access_keys``) manages access keys through the API."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from computed.accounts.registry import KEY_FILE, Accounts
from computed.store.engine import Database
from computed.errors import ComputedError
from computed.accounts.secret_box import SecretBox
from computed.settings import Settings

from .access_keys import access_key


def _accounts(settings: Settings) -> tuple[Accounts, Database]:
    db = Database(settings.database_url)
    return Accounts(db, SecretBox(settings.var_dir / KEY_FILE)), db


@click.group()
def account() -> None:
    """Create and list accounts (on the machine that runs the service); manage access keys
    (access-key, through the API)."""


account.add_command(access_key)


@account.command()
@click.argument("name")
@click.option("--admin", is_flag=True, help="An admin sees and acts on every account's resources.")
@click.pass_obj
def create(settings: Settings, name: str, admin: bool) -> None:
    """Create account NAME; prints its credentials as JSON, once: keep them."""
    accounts, db = _accounts(settings)
    try:
        creds = accounts.create(name, admin=admin)
    except ComputedError as e:
        raise click.ClickException(f"{e.code}: {e.message}") from None
    finally:
        db.dispose()
    click.echo(json.dumps(creds.to_dict(), indent=2))


@account.command("ls")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@click.pass_obj
def ls(settings: Settings, as_json: bool) -> None:
    """List accounts and their access key ids (never the secrets; inactive ones marked)."""
    accounts, db = _accounts(settings)
    try:
        rows = [{"id": a.id, "name": a.name, "admin": a.admin, "created_at": a.created_at.isoformat(),
                 "access_key_ids": [k.id for k in a.access_keys],
                 "inactive_access_key_ids": [k.id for k in a.access_keys if k.status != "Active"]}
                for a in accounts.list()]
    finally:
        db.dispose()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("ID", "NAME", "ADMIN", "ACCESS KEY IDS", "CREATED")
    for r in rows:
        keys = [k + (" (inactive)" if k in r["inactive_access_key_ids"] else "") for k in r["access_key_ids"]]
        table.add_row(r["id"], r["name"], "yes" if r["admin"] else "", ", ".join(keys),
                      r["created_at"][:19])
    Console().print(table)
