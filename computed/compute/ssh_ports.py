"""The SSH ports of instances, on their host's address: which are taken, how many of the
range (the ssh_ports setting) are free, and a free one for each new instance. A port is
taken on an address whichever host holds it (two hosts may be one machine). The scheduler
counts them (a host whose address has none left is filtered out); a launch picks them, in
the transaction that places it."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from computed.errors import InsufficientInstanceCapacity
from computed.hosts.registry import is_local
from computed.store.models import Host, Instance, PortForward
from computed.hosts.addresses import port_is_free_on
from computed.settings import Settings


def free_counts(s: Session, settings: Settings, addresses: Iterable[str]) -> dict[str, int]:
    """Address -> how many SSH ports of the range are still free on it, for ADDRESSES."""
    low, high = settings.ssh_ports
    taken = dict(s.execute(select(Instance.ssh_host, func.count()).where(
        Instance.ssh_port.between(low, high)).group_by(Instance.ssh_host)).all())
    return {address: high - low + 1 - taken.get(address, 0) for address in addresses}


def taken(s: Session, address: str) -> set[int]:
    """The SSH ports instances hold on ADDRESS."""
    return set(s.scalars(select(Instance.ssh_port).where(Instance.ssh_host == address,
                                                         Instance.ssh_port.is_not(None))))


def forwarded(s: Session, address: str) -> set[int]:
    """The ports instances forward on ADDRESS besides SSH (none of them is an SSH port)."""
    return set(s.scalars(select(PortForward.host_port).where(PortForward.host_address == address)))


def pick(s: Session, settings: Settings, hosts: list[Host]) -> list[int]:
    """A free SSH port for an instance on each of HOSTS, on the host's address: neither an
    instance's SSH or forwarded port there, nor taken on the host now (``port_is_free_on``;
    InsufficientInstanceCapacity if none is)."""
    low, high = settings.ssh_ports
    used_on: dict[str, set[int]] = {}
    ports = []
    for host in hosts:
        if host.address not in used_on:
            used_on[host.address] = taken(s, host.address) | forwarded(s, host.address)
        used = used_on[host.address]
        local = is_local(host.uri)
        port = next((p for p in range(low, high + 1)
                     if p not in used and port_is_free_on(host.address, p, local)), None)
        if port is None:
            raise InsufficientInstanceCapacity(
                f"no free SSH port left in {low}-{high} on {host.address} (host {host.name})")
        used.add(port)
        ports.append(port)
    return ports
