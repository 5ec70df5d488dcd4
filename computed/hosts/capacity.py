"""A host's capacity: what its instances may take in all under the overcommit ratios, what
they take (every instance not terminated: a stopped one keeps its place, as its start must
not fail for room), and what is left. The scheduler, the hosts' listing and the metrics
count room with these, so that they never disagree."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from computed.compute.state import State
from computed.store.models import Host, Instance
from computed.settings import Settings


@dataclass(frozen=True)
class Allocation:
    instances: int = 0
    vcpus: int = 0
    memory_mib: int = 0


def room(have: int | None, ratio: float) -> int:
    """What a host with HAVE CPUs (or MiB) may give its instances under the overcommit RATIO,
    the ratio taken as written (1.15 of 100 is 115, not the float product's 114)."""
    return math.floor(Decimal(repr(float(ratio))) * (have or 0))


def total_room(host: Host, settings: Settings) -> tuple[int, int]:
    """(vCPUs, MiB of memory) the host's instances may take in all: its capacity times the
    overcommit ratios (a host never reached has none)."""
    return room(host.vcpus, settings.cpu_overcommit), room(host.memory_mib, settings.memory_overcommit)


def free_room(host: Host, allocated: Allocation, settings: Settings) -> tuple[int, int]:
    """(vCPUs, MiB of memory) still free under the overcommit ratios, with ALLOCATED taken."""
    vcpus, memory_mib = total_room(host, settings)
    return vcpus - allocated.vcpus, memory_mib - allocated.memory_mib


def allocations(s: Session, names: list[str] | None = None) -> dict[str, Allocation]:
    """Host name -> what its instances that are not terminated take."""
    q = (select(Instance.host, func.count(), func.coalesce(func.sum(Instance.vcpus), 0),
                func.coalesce(func.sum(Instance.memory_mib), 0))
         .where(Instance.state != State.TERMINATED, Instance.host.is_not(None)).group_by(Instance.host))
    if names is not None:
        q = q.where(Instance.host.in_(names))
    return {host: Allocation(n, vcpus, memory) for host, n, vcpus, memory in s.execute(q)}
