"""``computed port ls|add|rm``: the guest ports an instance forwards from its host's address,
besides SSH, through the API (``--port`` on ``computed launch`` asks for them at launch)."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from computed.errors import InvalidParameterValue
from computed.compute.ports import PortSpec

from .client import ApiClient, part, with_client

PORT_HELP = ("HOST_PORT:GUEST_PORT, or GUEST_PORT for a free host port of the service's forward range "
             "(TCP; host ports from 1024)")


def parse_specs(values: tuple[str, ...], hint: str) -> list[dict]:
    """--port values (or arguments) as the API's port objects."""
    specs = []
    for value in values:
        try:
            spec = PortSpec.parse(value)
        except InvalidParameterValue as e:
            raise click.BadParameter(e.message, param_hint=hint) from None
        body = {"guest_port": spec.guest_port, "protocol": spec.protocol}
        if spec.host_port is not None:
            body["host_port"] = spec.host_port
        specs.append(body)
    return specs


def describe(port: dict) -> str:
    return f"{port['address']} -> guest port {port['guest_port']}/{port['protocol']}"


@click.group()
def port() -> None:
    """List, add and remove an instance's forwarded ports."""


@port.command("ls")
@click.argument("instance_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="The ports as the API describes them.")
@with_client
def ls(client: ApiClient, instance_id: str, as_json: bool) -> None:
    """The ports instance ID forwards, besides SSH."""
    ports = client.get(f"/v1/instances/{part(instance_id)}/ports")["ports"]
    if as_json:
        click.echo(json.dumps(ports, indent=2))
        return
    if not ports:
        click.echo(f"{instance_id} forwards no port besides SSH; add one with: computed port add {instance_id} "
                   "8080:80", err=True)
        return
    table = Table(box=None)
    for column in ("ADDRESS", "GUEST PORT", "PROTOCOL"):
        table.add_column(column, no_wrap=True)
    for p in ports:
        table.add_row(p["address"], str(p["guest_port"]), p["protocol"])
    Console(soft_wrap=True).print(table)


@port.command()
@click.argument("instance_id", metavar="ID")
@click.argument("specs", metavar="PORT...", nargs=-1, required=True)
@with_client
def add(client: ApiClient, instance_id: str, specs: tuple[str, ...]) -> None:
    """Forward guest ports of instance ID (running or stopped), at once. Each PORT is
    HOST_PORT:GUEST_PORT, or GUEST_PORT for a free host port."""
    for body in parse_specs(specs, "PORT"):
        added = client.post(f"/v1/instances/{part(instance_id)}/ports", body)
        click.echo(describe(added))


@port.command()
@click.argument("instance_id", metavar="ID")
@click.argument("host_port", type=click.IntRange(1, 65535))
@with_client
def rm(client: ApiClient, instance_id: str, host_port: int) -> None:
    """Stop forwarding HOST_PORT to instance ID."""
    client.delete(f"/v1/instances/{part(instance_id)}/ports/{host_port}")
    click.echo(f"{instance_id} no longer forwards port {host_port}", err=True)
