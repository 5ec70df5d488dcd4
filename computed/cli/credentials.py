"""The credentials the CLI signs its API requests with, the first found of:

1. ``COMPUTED_ACCESS_KEY_ID`` and ``COMPUTED_SECRET_ACCESS_KEY`` in the environment;
2. a profile (``--profile`` or ``COMPUTED_PROFILE``, default ``default``) in the profile file
   (``COMPUTED_CREDENTIALS_FILE``, default ``~/.config/computed/credentials``), INI::

       [default]
       access_key_id = AKCD...
       secret_access_key = ...

3. on the machine that runs the service, the first admin's credentials file under the state
   directory, if this user can read it (``var/admin-credentials.json``).

``computed account access-key create --save-profile`` / ``--admin-file`` and ``rotate``
write new credentials back to the profile file or the admin file (``save_profile``,
``registry.write_credentials_file``): mode 0600, replaced at once."""

from __future__ import annotations

import configparser
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import click

from computed.accounts.registry import ADMIN_CREDENTIALS_FILE
from computed.settings import Settings

ACCESS_KEY_ENV = "COMPUTED_ACCESS_KEY_ID"
SECRET_ENV = "COMPUTED_SECRET_ACCESS_KEY"
PROFILE_ENV = "COMPUTED_PROFILE"
FILE_ENV = "COMPUTED_CREDENTIALS_FILE"


def profile_file() -> Path:
    if os.environ.get(FILE_ENV):
        return Path(os.environ[FILE_ENV])
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "computed" / "credentials"


@dataclass(frozen=True)
class Source:
    """Where credentials were found: ``environment``, ``profile`` (PROFILE in PATH) or
    ``admin-file`` (PATH)."""
    kind: str
    path: Path | None = None
    profile: str | None = None

    def __str__(self) -> str:
        if self.kind == "environment":
            return f"the environment ({ACCESS_KEY_ENV}, {SECRET_ENV})"
        if self.kind == "profile":
            return f"the profile [{self.profile}] in {self.path}"
        return f"the first admin's file {self.path}"


def find(settings: Settings, profile: str | None) -> tuple[str, str]:
    """(access key id, secret); a ClickException saying what to do if there are none."""
    key_id, secret, _ = locate(settings, profile)
    return key_id, secret


def locate(settings: Settings, profile: str | None) -> tuple[str, str, Source]:
    """(access key id, secret, where they are): ``find``'s, and where it found them."""
    key_id, secret = os.environ.get(ACCESS_KEY_ENV), os.environ.get(SECRET_ENV)
    if key_id or secret:
        if not (key_id and secret):
            raise click.ClickException(f"set both {ACCESS_KEY_ENV} and {SECRET_ENV}, or neither")
        return key_id, secret, Source("environment")
    path = profile_file()
    name = profile or "default"
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error as e:
        raise click.ClickException(f"{path}: {e}") from None
    if parser.has_section(name):
        section = parser[name]
        if not section.get("access_key_id") or not section.get("secret_access_key"):
            raise click.ClickException(f"{path}: [{name}] needs access_key_id and secret_access_key")
        return section["access_key_id"], section["secret_access_key"], Source("profile", path, name)
    if profile:
        raise click.ClickException(f"no profile [{profile}] in {path}")
    admin = settings.var_dir / ADMIN_CREDENTIALS_FILE
    try:
        data = json.loads(admin.read_text())
        return data["access_key_id"], data["secret_access_key"], Source("admin-file", admin)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    raise click.ClickException(
        f"no credentials: set {ACCESS_KEY_ENV} and {SECRET_ENV}, or write a profile to {path} "
        "(`computed account create NAME` on the service's machine prints a new account's credentials)")


def save_profile(path: Path, name: str, key_id: str, secret: str) -> None:
    """Set profile NAME of the profile file PATH to these credentials (made, mode 0600, if
    there is none), keeping its other profiles; the file is replaced at once."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error as e:
        raise click.ClickException(f"{path}: {e}") from None
    if not parser.has_section(name):
        parser.add_section(name)
    parser[name]["access_key_id"] = key_id
    parser[name]["secret_access_key"] = secret
    text = io.StringIO()
    parser.write(text)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text.getvalue())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
