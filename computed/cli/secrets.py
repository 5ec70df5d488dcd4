"""``computed secrets rotate-sealing-key|rotate-console-key``: replace the service's own
keys (an operator's command, run where the service runs, on its state directory and store;
no API call), online: the service's processes go on serving and pick the new key up by
themselves (``computed.accounts.key_rotation``)."""

from __future__ import annotations

import click

from computed.accounts.key_rotation import CONSOLE_KEY_FILE, RotationRefused, rotate_console_key, rotate_sealing_key
from computed.accounts.registry import KEY_FILE
from computed.settings import Settings
from computed.store.engine import Database


@click.group()
def secrets() -> None:
    """Rotate the service's own keys (on the machine that runs the service)."""


@secrets.command("rotate-sealing-key")
@click.pass_obj
def rotate_sealing(settings: Settings) -> None:
    """A new key for the sealed access key secrets (secrets/access-keys.key): every secret
    in the store is sealed again with it and the old key is dropped. Access keys keep
    working throughout; back the key file up again afterwards (older store backups need
    the key file of their time)."""
    db = Database(settings.database_url)
    key_file = settings.var_dir / KEY_FILE
    try:
        done = rotate_sealing_key(db, key_file)
    except RotationRefused as e:
        raise click.ClickException(str(e)) from None
    finally:
        db.dispose()
    click.echo(f"sealing key rotated: {done.resealed} access key secret(s) sealed again with the new key; "
               f"{key_file} now holds only the new key (back it up again)")


@secrets.command("rotate-console-key")
@click.pass_obj
def rotate_console(settings: Settings) -> None:
    """A new key for the web console's cookies (secrets/console-session.key): every console
    login ends (its users log in again)."""
    db = Database(settings.database_url)
    try:
        ended = rotate_console_key(db, settings.var_dir / CONSOLE_KEY_FILE)
    finally:
        db.dispose()
    click.echo(f"console signing key rotated: {ended} console login(s) ended")
