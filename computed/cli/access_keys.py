"""``computed account access-key create|ls|deactivate|activate|rm|rotate``: an account's
access keys, through the REST API (``/v1/account/access-keys``), signed with the CLI's
credentials (``credentials``); admins name another account with ``--account``.

Rotating a key (``rotate`` does these steps): make a second key, save it where the CLI's
credentials are (a profile, or the first admin's file), check that it signs in, deactivate
the old key (its clients fail, and show up), then delete it (``--delete``, or ``rm`` once
nothing complains)."""

from __future__ import annotations

import json

import click
import requests
from rich.console import Console
from rich.table import Table

from computed.accounts.registry import ADMIN_CREDENTIALS_FILE, Credentials, write_credentials_file
from computed.settings import Settings

from . import credentials
from .client import ApiClient, _settings, part, with_client
from .instances import _time

PATH = "/v1/account/access-keys"
ACCOUNT_HELP = "Admins: another account's keys (its 12-digit id)."
FORCE_HELP = ("Also if it is the account's last active key: the account then has no way in until an admin "
              "makes it a key.")


def _params(account: str | None) -> dict:
    return {"account": account} if account else {}


def _creds(made: dict) -> Credentials:
    return Credentials(made["account_id"], made["account_name"], made["admin"], made["access_key_id"],
                       made["secret_access_key"])


def _admin_file_refusal(settings: Settings, creds: Credentials) -> str | None:
    """Why CREDS may not go into the first admin's file (None if they may): only an admin's
    key, and only the file's own account's if there is a file already."""
    path = settings.var_dir / ADMIN_CREDENTIALS_FILE
    if not creds.admin:
        return f"{creds.access_key_id} is not an admin's key: not writing it to {path}"
    try:
        previous = json.loads(path.read_text()).get("account_id")
    except (OSError, ValueError, AttributeError):
        previous = None
    if previous not in (None, creds.account_id):
        return f"{path} holds the credentials of account {previous}, not {creds.account_id}: not replacing them"
    return None


def _save_admin_file(settings: Settings, creds: Credentials) -> str:
    path = settings.var_dir / ADMIN_CREDENTIALS_FILE
    write_credentials_file(path, creds)
    return str(path)


def _make(client: ApiClient, settings: Settings, account: str | None, admin_file: bool) -> Credentials:
    """A new key; one that may not go into the admin file, as asked, is deleted again."""
    creds = _creds(client.request("POST", PATH, params=_params(account)))
    refusal = _admin_file_refusal(settings, creds) if admin_file else None
    if refusal:
        client.request("DELETE", f"{PATH}/{part(creds.access_key_id)}")
        raise click.ClickException(refusal + " (the key made is deleted again)")
    return creds


def _save(settings: Settings, creds: Credentials, admin_file: bool, profile: str | None) -> str | None:
    """Save CREDS as asked; where (None if nowhere). A failure says the key exists anyway."""
    try:
        if admin_file:
            return _save_admin_file(settings, creds)
        if profile:
            path = credentials.profile_file()
            credentials.save_profile(path, profile, creds.access_key_id, creds.secret_access_key)
            return f"the profile [{profile}] in {path}"
    except (click.ClickException, OSError) as e:
        message = e.message if isinstance(e, click.ClickException) else str(e)
        click.echo(json.dumps(creds.to_dict(), indent=2))
        raise click.ClickException(f"made the access key {creds.access_key_id} (above: keep it) but could not "
                                   f"save it: {message}") from None
    return None


@click.group("access-key")
def access_key() -> None:
    """Make, list, deactivate, reactivate, delete and rotate access keys (two at most per
    account), through the API."""


@access_key.command()
@click.option("--account", metavar="ID", help=ACCOUNT_HELP)
@click.option("--admin-file", is_flag=True,
              help="Save the new key in the first admin's credentials file (var/admin-credentials.json) instead of "
                   "printing it: for rotating that key.")
@click.option("--save-profile", metavar="NAME", help="Save the new key as profile NAME of the profile file instead "
                                                     "of printing it.")
@with_client
def create(client: ApiClient, account: str | None, admin_file: bool, save_profile: str | None) -> None:
    """Make an access key; prints its credentials as JSON, once: keep them (or save them with
    --admin-file / --save-profile). The old key keeps working until deactivated or deleted."""
    if admin_file and save_profile:
        raise click.UsageError("--admin-file or --save-profile, not both")
    settings = _settings(click.get_current_context())
    creds = _make(client, settings, account, admin_file)
    where = _save(settings, creds, admin_file, save_profile)
    if where is None:
        click.echo(json.dumps(creds.to_dict(), indent=2))
    else:
        click.echo(f"made the access key {creds.access_key_id}; saved in {where} (mode 0600)", err=True)


@access_key.command("ls")
@click.option("--account", metavar="ID", help=ACCOUNT_HELP)
@click.option("--json", "as_json", is_flag=True, help="The keys as the API describes them (a JSON list).")
@with_client
def ls(client: ApiClient, account: str | None, as_json: bool) -> None:
    """List the account's access keys: status, made, last used (never a secret); * marks the
    key this command signed in with."""
    keys = client.get(PATH, **_params(account))["access_keys"]
    if as_json:
        click.echo(json.dumps(keys, indent=2))
        return
    table = Table("ACCESS KEY ID", "STATUS", "CREATED", "LAST USED", "THROUGH", "", box=None)
    for k in keys:
        table.add_row(k["access_key_id"], k["status"], _time(k["created_at"]), _time(k["last_used_at"]),
                      k["last_used_service"] or "-", "*" if k["current"] else "")
    Console(soft_wrap=True).print(table)


def _set_status(client: ApiClient, key_id: str, status: str, force: bool) -> dict:
    return client.request("PATCH", f"{PATH}/{part(key_id)}", json={"status": status},
                          params={"force": "true"} if force else None)


@access_key.command()
@click.argument("access_key_id")
@click.option("--force", is_flag=True, help=FORCE_HELP)
@with_client
def deactivate(client: ApiClient, access_key_id: str, force: bool) -> None:
    """Deactivate ACCESS_KEY_ID: it signs in nowhere from its next request on, and its console
    logins end; `activate` undoes it."""
    key = _set_status(client, access_key_id, "Inactive", force)
    click.echo(f"deactivated the access key {key['access_key_id']}"
               + (" (the one this command signed in with)" if key["current"] else ""), err=True)


@access_key.command()
@click.argument("access_key_id")
@with_client
def activate(client: ApiClient, access_key_id: str) -> None:
    """Reactivate ACCESS_KEY_ID."""
    key = _set_status(client, access_key_id, "Active", False)
    click.echo(f"activated the access key {key['access_key_id']}", err=True)


@access_key.command()
@click.argument("access_key_id")
@click.option("--force", is_flag=True, help=FORCE_HELP)
@with_client
def rm(client: ApiClient, access_key_id: str, force: bool) -> None:
    """Delete ACCESS_KEY_ID for good (its console logins end)."""
    client.request("DELETE", f"{PATH}/{part(access_key_id)}", params={"force": "true"} if force else None)
    click.echo(f"deleted the access key {access_key_id}", err=True)


access_key.add_command(rm, "delete")


@access_key.command()
@click.option("--delete", "delete_old", is_flag=True, help="Delete the old key instead of only deactivating it.")
@with_client
def rotate(client: ApiClient, delete_old: bool) -> None:
    """Rotate the key this command signs in with: make a new key, save it where this one is
    (its profile, or the first admin's file), check that it signs in, then deactivate the old
    key (delete it with --delete). Keys from the environment are not rotated here: make one
    with `create`, set the variables, then deactivate the old one."""
    ctx = click.get_current_context()
    settings = _settings(ctx)
    old_id, _, source = credentials.locate(settings, ctx.params.get("profile"))
    if source.kind == "environment":
        raise click.ClickException(f"the credentials come from {source}: make a key with `computed account "
                                   "access-key create`, set the variables to it, then deactivate this one")
    creds = _make(client, settings, None, source.kind == "admin-file")
    where = _save(settings, creds, source.kind == "admin-file", source.profile)
    fresh = ApiClient(client.base_url, auth=(creds.access_key_id, creds.secret_access_key), timeout=client.timeout)
    try:
        mine = {k["access_key_id"]: k for k in fresh.get(PATH)["access_keys"]}
    except (click.ClickException, requests.RequestException) as e:
        raise click.ClickException(f"the new key {creds.access_key_id} (saved in {where}) did not sign in ({e}); "
                                   f"the old key {old_id} is left active") from None
    finally:
        fresh.close()
    if not mine.get(creds.access_key_id, {}).get("current"):
        raise click.ClickException(f"the new key {creds.access_key_id} did not sign in as itself; the old key "
                                   f"{old_id} is left active")
    if delete_old:
        client.request("DELETE", f"{PATH}/{part(old_id)}")
    else:
        _set_status(client, old_id, "Inactive", False)
    click.echo(f"rotated: {creds.access_key_id} saved in {where}; the old key {old_id} "
               + ("deleted" if delete_old else "deactivated (delete it with `computed account access-key rm "
                                               f"{old_id}` once nothing needs it)"), err=True)
