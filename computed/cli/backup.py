"""``computed backup PATH``: a consistent copy of the store, taken while the service runs
(an operator's command, run where the service runs; no API call)."""

from __future__ import annotations

from pathlib import Path

import click

from computed.accounts.registry import KEY_FILE
from computed.store.backup import BackupError
from computed.store.backup import backup as backup_store
from computed.settings import Settings


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


@click.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace PATH if it exists.")
@click.pass_obj
def backup(settings: Settings, path: Path, force: bool) -> None:
    """Copy the store (SQLite) to PATH while the service runs: a consistent snapshot, made
    with SQLite's online backup API, checked, mode 0600. It holds every account's data and
    the sealed access key secrets; the key that opens them is not in it: keep
    secrets/access-keys.key of the state directory too (see the README's "Backup and restore")."""
    try:
        result = backup_store(settings.database_url, path, force=force)
    except BackupError as e:
        raise click.ClickException(str(e)) from None
    counts = result.counts
    click.echo(f"wrote {result.path} ({_size(result.size)}, mode 0600)")
    click.echo(f"  {counts.get('instances', 0)} instances, {counts.get('usage_events', 0)} usage events, "
               f"{counts.get('accounts', 0)} accounts; integrity check: {result.integrity}; "
               f"schema revision {result.schema or 'none'}")
    click.echo(f"  not in it: {settings.var_dir / KEY_FILE}, without which the access keys' secrets cannot be "
               f"opened: back that file up separately and keep it safe")
