"""``computed host add|ls|show|disable|enable|rm``: the libvirt hosts instances run on,
through the API (admin credentials), so every process of the running service sees a change
at once."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from computed.hosts.registry import IMAGE_MODES

from .client import ApiClient, part, with_client

#: seconds an add may take: the service connects to the host first, and a connection to a
#: machine that does not answer gives up only when TCP does (about two minutes on Linux)
ADD_TIMEOUT = 180.0


@click.group()
def host() -> None:
    """Add, list, show, disable, enable and remove hosts, and rotate their management keys
    (admins only)."""


def _summary(h: dict) -> str:
    capacity = h.get("capacity") or {}
    return (f"{h['name']} ({h['uri']}, {capacity.get('vcpus')} CPUs, {capacity.get('memory_mib')} MiB, "
            f"{'enabled' if h.get('enabled') else 'disabled'})")


@host.command()
@click.argument("name")
@click.argument("uri")
@click.option("--address", metavar="ADDR",
              help="Where the instances' SSH ports are reached (default: the URI's host name, else the "
                   "service's ssh_host).")
@click.option("--image-mode", type=click.Choice(IMAGE_MODES), default="shared", show_default=True,
              help="shared: the host sees the service's image store and instance paths; copy: images are "
                   "copied to the host's --storage-dir through libvirt.")
@click.option("--storage-dir", metavar="DIR", help="With --image-mode copy: the directory on the host for "
                                                   "images and instance files (an absolute path).")
@click.option("--disabled", is_flag=True, help="Add it disabled: it takes no instance until enabled.")
@with_client
def add(client: ApiClient, name: str, uri: str, address: str | None, image_mode: str, storage_dir: str | None,
        disabled: bool) -> None:
    """Add host NAME at libvirt URI.

    The URI is the host's libvirt URI, e.g. qemu+ssh://root@node-2/system. The host must
    answer now: its CPUs and memory come from libvirt."""
    body: dict = {"name": name, "uri": uri, "image_mode": image_mode, "enabled": not disabled}
    if address is not None:
        body["address"] = address
    if storage_dir is not None:
        body["storage_dir"] = storage_dir
    client.timeout = max(client.timeout, ADD_TIMEOUT)
    added = client.post("/v1/hosts", body)
    click.echo(f"added host {_summary(added)}", err=True)


def _used(h: dict, what: str) -> str:
    return f"{(h.get('allocated') or {}).get(what, 0)}/{(h.get('room') or {}).get(what, 0)}"


def _reachable(h: dict) -> str:
    if not h.get("checked_at"):
        return "not yet"
    return "yes" if h.get("reachable") else "no"


@host.command("ls")
@click.option("--json", "as_json", is_flag=True, help="The hosts as the API describes them (a JSON list).")
@with_client
def ls(client: ApiClient, as_json: bool) -> None:
    """List hosts.

    vCPUs and memory are shown as what the instances there take / what they may take under
    the overcommit ratios (stopped instances count)."""
    hosts = client.get("/v1/hosts")["hosts"]
    if as_json:
        click.echo(json.dumps(hosts, indent=2))
        return
    table = Table("NAME", "URI", "ADDRESS", "ENABLED", "REACHABLE", "VCPUS USED/ROOM", "MEMORY MIB USED/ROOM",
                  "INSTANCES", box=None)
    for h in hosts:
        table.add_row(h["name"], h["uri"], h["address"], "yes" if h["enabled"] else "no", _reachable(h),
                      _used(h, "vcpus"), _used(h, "memory_mib"), str((h.get("allocated") or {}).get("instances", 0)))
    Console(soft_wrap=True).print(table)


@host.command()
@click.argument("name")
@with_client
def show(client: ApiClient, name: str) -> None:
    """Show host NAME as the API describes it (JSON)."""
    click.echo(json.dumps(client.get(f"/v1/hosts/{part(name)}"), indent=2))


@host.command()
@click.argument("name")
@with_client
def disable(client: ApiClient, name: str) -> None:
    """Disable host NAME: it takes no new instance; those there go on."""
    client.post(f"/v1/hosts/{part(name)}/disable")
    click.echo(f"disabled host {name}", err=True)


@host.command()
@click.argument("name")
@with_client
def enable(client: ApiClient, name: str) -> None:
    """Enable host NAME: new instances may be placed there again."""
    client.post(f"/v1/hosts/{part(name)}/enable")
    click.echo(f"enabled host {name}", err=True)


@host.command()
@click.argument("name")
@with_client
def rm(client: ApiClient, name: str) -> None:
    """Remove host NAME.

    Refused while an instance that is not terminated (a stopped one too) is there."""
    client.delete(f"/v1/hosts/{part(name)}")
    click.echo(f"removed host {name}", err=True)


@host.command("rotate-key")
@click.argument("name")
@with_client
def rotate_key(client: ApiClient, name: str) -> None:
    """Make a new management key for host NAME.

    The service checks a host's guests over SSH with that host's management key (only the
    readiness and container engine checks: a forced command). New guests get the new key;
    the older keys stay valid for the guests that have them and are deleted once those are
    terminated. Prints the new key's fingerprint."""
    rotated = client.post(f"/v1/hosts/{part(name)}/rotate-key")
    key = rotated["management_key"]
    click.echo(key["fingerprint"])
    for old in rotated["retired"]:
        click.echo(f"{old['fingerprint']} retired: still valid for {old['instances']} instance(s) that have it",
                   err=True)
    click.echo(f"rotated the management key of host {name}: new guests get {key['id']}", err=True)
