"""``computed keypair create|import|ls|rm``: SSH key pairs, through the API."""

from __future__ import annotations

import json
import os

import click
from rich.console import Console
from rich.table import Table

from .client import ApiClient, part, with_client
from .instances import _time


@click.group()
def keypair() -> None:
    """Create, import, list and remove SSH key pairs."""


def _reserve(path: str) -> int:
    """A new file at PATH, readable by its owner only; never an existing file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    except FileExistsError:
        raise click.ClickException(
            f"{path} already exists; not overwriting it (choose another file with --output)") from None
    except OSError as e:
        raise click.ClickException(f"cannot create {path}: {e.strerror}") from None
    os.fchmod(fd, 0o600)  # whatever the umask
    return fd


@keypair.command()
@click.argument("name")
@click.option("-o", "--output", metavar="FILE",
              help="Where to save the private key (default ./NAME.pem; '-' prints it to stdout).")
@with_client
def create(client: ApiClient, name: str, output: str | None) -> None:
    """Create key pair NAME and save its private key, readable by you only, in ./NAME.pem.

    The service keeps only the public key: the private key is shown this once. An
    existing file is never overwritten."""
    path = output or f"{name}.pem"
    fd = None if path == "-" else _reserve(path)
    try:
        created = client.post("/v1/keypairs", {"name": name})
    except BaseException:
        if fd is not None:
            os.close(fd)
            os.unlink(path)
        raise
    private = created["private_key"]
    if not private.endswith("\n"):
        private += "\n"
    if fd is None:
        click.echo(private, nl=False)
        click.echo(f"created key pair {name} ({created['fingerprint']})", err=True)
        return
    try:
        with os.fdopen(fd, "w") as f:
            f.write(private)
    except OSError as e:
        raise click.ClickException(
            f"created key pair {name} but could not save its private key in {path}: {e}; "
            f"the key is lost: remove the pair with `computed keypair rm {name}` and create it again") from None
    click.echo(f"created key pair {name} ({created['fingerprint']}); private key saved in {path} (mode 0600)",
               err=True)


@keypair.command("import")
@click.argument("name")
@click.argument("pubkey_file", metavar="PUBKEY_FILE", type=click.File("r"))
@with_client
def import_(client: ApiClient, name: str, pubkey_file) -> None:
    """Import an OpenSSH public key (e.g. ~/.ssh/id_ed25519.pub; '-' reads stdin) as key pair NAME."""
    text = pubkey_file.read()
    if "PRIVATE KEY" in text:
        raise click.ClickException(f"{pubkey_file.name} holds a private key; import its public key (.pub) instead")
    created = client.post("/v1/keypairs", {"name": name, "public_key": text.strip()})
    click.echo(f"imported key pair {created['name']} ({created['key_type']}, {created['fingerprint']})", err=True)


@keypair.command("ls")
@click.option("--json", "as_json", is_flag=True, help="The key pairs as the API describes them (a JSON list).")
@with_client
def ls(client: ApiClient, as_json: bool) -> None:
    """List key pairs."""
    pairs = client.get("/v1/keypairs")["key_pairs"]
    if as_json:
        click.echo(json.dumps(pairs, indent=2))
        return
    if not pairs:
        click.echo("no key pairs; create one with: computed keypair create NAME", err=True)
        return
    table = Table("NAME", "TYPE", "FINGERPRINT", "CREATED", box=None)
    for p in pairs:
        table.add_row(p["name"], p["key_type"], p["fingerprint"], _time(p.get("created_at")))
    Console(soft_wrap=True).print(table)


@keypair.command()
@click.argument("name")
@with_client
def rm(client: ApiClient, name: str) -> None:
    """Remove key pair NAME (instances launched with it keep their key)."""
    client.delete(f"/v1/keypairs/{part(name)}")
    click.echo(f"removed key pair {name}", err=True)
