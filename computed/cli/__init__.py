"""The ``computed`` command."""

from __future__ import annotations

import click

from computed import __version__
from computed.settings import Settings, SettingsError

from .account import account
from .backup import backup
from .budget import budget
from .host import host
from .image import image
from .instances import console, launch, ls, reboot, show, start, stop, terminate
from .keypairs import keypair
from .ports import port
from .remote import exec_, ssh
from .report import report
from .secrets import secrets
from .serve import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="computed")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """computed: self-hosted, EC2-style virtual machines on libvirt/QEMU."""
    try:
        ctx.obj = Settings.load()
    except SettingsError as e:
        raise click.ClickException(str(e)) from None


cli.add_command(account)
cli.add_command(host)
cli.add_command(image)
cli.add_command(serve)
cli.add_command(keypair)
cli.add_command(launch)
cli.add_command(ls)
cli.add_command(show)
cli.add_command(stop)
cli.add_command(start)
cli.add_command(reboot)
cli.add_command(terminate)
cli.add_command(console)
cli.add_command(port)
cli.add_command(ssh)
cli.add_command(exec_)
cli.add_command(report)
cli.add_command(backup)
cli.add_command(budget)
cli.add_command(secrets)


def main() -> None:
    cli(prog_name="computed")
