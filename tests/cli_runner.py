"""The ``computed`` command run in-process (click's CliRunner) against a served API, with
one account's credentials in its environment, as a user would run it."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result

from computed.accounts.registry import Credentials
from computed.cli import cli


def run_cli(url: str, creds: Credentials, home: Path, *args: str) -> Result:
    """``computed ARGS`` against the API at URL as CREDS, its client state under HOME."""
    env = {"COMPUTED_API_URL": url, "COMPUTED_VAR_DIR": str(home / "client-var"), "COMPUTED_CONFIG": None,
           "COMPUTED_ACCESS_KEY_ID": creds.access_key_id, "COMPUTED_SECRET_ACCESS_KEY": creds.secret_access_key,
           "COMPUTED_KNOWN_HOSTS": str(home / "known_hosts"), "COLUMNS": "250"}
    return CliRunner(env=env).invoke(cli, list(args), catch_exceptions=False)
