"""The scheduler: which host a new instance goes to, as Nova's filter scheduler decides.

Filters drop the hosts that cannot take the instance (disabled, unreachable, not enough
vCPUs or memory under the overcommit ratios, image not available there); weighers rank the
rest, each weight normalized to 0..1 over the candidates and multiplied by its multiplier.
``spread`` (the default) prefers the host with the most room left, ``pack`` the one with the
least. A host whose address has no SSH port left is filtered out too. It runs inside the launch's transaction, which writers take one at a time (db.py),
so what it reads as allocated cannot change before the placement is written: two API
processes never overcommit a host between them. The instances of one request are placed
one after the other, each counting those placed before it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from images.library import ImageBuild

from computed.errors import InsufficientInstanceCapacity
from computed.hosts.capacity import Allocation, allocations, free_room, room
from computed.store.models import Host, HostImage
from computed.settings import Settings
from . import ssh_ports
from .sizes import Size

STRATEGIES = ("spread", "pack")
#: the hosts a "no host fits" error explains, at most
MAX_REASONS = 10


@dataclass(frozen=True)
class Candidate:
    host: Host
    allocated: Allocation
    #: the image is on the host already (shared path, or copied and verified)
    has_image: bool
    #: SSH ports of the range still free on the host's address (hosts may share one)
    free_ports: int

    def room(self, settings: Settings) -> tuple[int, int]:
        """(vCPUs, MiB of memory) still free under the overcommit ratios."""
        return free_room(self.host, self.allocated, settings)

    def taking(self, size: Size) -> Candidate:
        a = self.allocated
        return replace(self, allocated=Allocation(a.instances + 1, a.vcpus + size.vcpus, a.memory_mib + size.memory_mib),
                       free_ports=self.free_ports - 1)


#: filter name -> (candidate, size, image, settings) -> why the host cannot take it, or None
Filter = Callable[[Candidate, Size, ImageBuild, Settings], "str | None"]


def enabled_filter(c: Candidate, size: Size, image: ImageBuild, settings: Settings) -> str | None:
    return None if c.host.enabled else "disabled"


def reachable_filter(c: Candidate, size: Size, image: ImageBuild, settings: Settings) -> str | None:
    return None if c.host.reachable else "unreachable"


def cpu_filter(c: Candidate, size: Size, image: ImageBuild, settings: Settings) -> str | None:
    return _room("vCPUs", c.host.vcpus, settings.cpu_overcommit, c.allocated.vcpus, size.vcpus)


def memory_filter(c: Candidate, size: Size, image: ImageBuild, settings: Settings) -> str | None:
    return _room("MiB of memory", c.host.memory_mib, settings.memory_overcommit, c.allocated.memory_mib,
                 size.memory_mib)


def _room(what: str, have: int | None, ratio: float, used: int, wanted: int) -> str | None:
    total = room(have, ratio)
    if used + wanted <= total:
        return None
    return f"room for {total} {what} ({have or 0} times the overcommit ratio {ratio:g}): {used} in use, {wanted} needed"


def ports_filter(c: Candidate, size: Size, image: ImageBuild, settings: Settings) -> str | None:
    low, high = settings.ssh_ports
    return None if c.free_ports > 0 else f"no free SSH port left in {low}-{high} on {c.host.address}"


def image_filter(c: Candidate, size: Size, image: ImageBuild, settings: Settings) -> str | None:
    # a shared-path host reads the build where the store keeps it; a copy-mode host gets a copy
    if c.host.image_mode == "shared" and not Path(image.path).is_dir():
        return f"the image {image.name} is not at its shared path"
    return None


FILTERS: dict[str, Filter] = {"enabled": enabled_filter, "reachable": reachable_filter, "vcpus": cpu_filter,
                              "memory": memory_filter, "image": image_filter, "ports": ports_filter}

#: weigher name -> (multiplier for spread, for pack, the raw weight of a candidate)
WEIGHERS: dict[str, tuple[float, float, Callable[[Candidate, Settings], float]]] = {
    "memory": (1.0, -1.0, lambda c, settings: c.room(settings)[1]),
    "vcpus": (1.0, -1.0, lambda c, settings: c.room(settings)[0]),
    # a small preference, whatever the strategy, for a host that has the image already
    "image": (0.1, 0.1, lambda c, settings: 1.0 if c.has_image else 0.0),
}


class Scheduler:
    def __init__(self, settings: Settings):
        self.settings = settings

    def candidates(self, s: Session, image: ImageBuild) -> list[Candidate]:
        hosts = list(s.scalars(select(Host).order_by(Host.name)))
        used = allocations(s)
        copied = set(s.scalars(select(HostImage.host).where(
            HostImage.disk_sha256 == image.manifest.artifacts["disk"]["sha256"])))
        free = ssh_ports.free_counts(s, self.settings, {h.address for h in hosts})
        return [Candidate(h, used.get(h.name, Allocation()), h.image_mode == "shared" or h.name in copied,
                          free[h.address])
                for h in hosts]

    def place(self, s: Session, size: Size, image: ImageBuild, count: int) -> list[Host]:
        """The host of each of COUNT instances of SIZE (InsufficientInstanceCapacity if one
        has none); call inside the transaction that writes the instances."""
        candidates = self.candidates(s, image)
        chosen = []
        for _ in range(count):
            fits, why = self.filter(candidates, size, image)
            if not fits:
                raise no_valid_host(size, count, len(chosen), why)
            best = self.weigh(fits)[0]
            chosen.append(best.host)
            candidates = [c.taking(size) if c is best else
                          replace(c, free_ports=c.free_ports - 1) if c.host.address == best.host.address else c
                          for c in candidates]
        return chosen

    def filter(self, candidates: list[Candidate], size: Size, image: ImageBuild
               ) -> tuple[list[Candidate], dict[str, str]]:
        """(the candidates every filter passes, host name -> why a filter refused it)."""
        fits, why = [], {}
        for c in candidates:
            for name, check in FILTERS.items():
                if (reason := check(c, size, image, self.settings)) is not None:
                    why[c.host.name] = reason
                    break
            else:
                fits.append(c)
        return fits, why

    def weigh(self, candidates: list[Candidate]) -> list[Candidate]:
        """CANDIDATES best first: the sum of each weigher's normalized weight times its
        multiplier; ties go to the host with fewer instances, then by name."""
        column = 0 if self.settings.scheduler_strategy == "spread" else 1
        totals = [0.0] * len(candidates)
        for weigher in WEIGHERS.values():
            multiplier, weight = weigher[column], weigher[2]
            raw = [weight(c, self.settings) for c in candidates]
            low, high = min(raw), max(raw)
            if high > low:
                for i, w in enumerate(raw):
                    totals[i] += multiplier * (w - low) / (high - low)
        order = sorted(range(len(candidates)), key=lambda i: (-totals[i], candidates[i].allocated.instances,
                                                              candidates[i].host.name))
        return [candidates[i] for i in order]


def no_valid_host(size: Size, count: int, placed: int, why: dict[str, str]) -> InsufficientInstanceCapacity:
    if not why:
        detail = "the service has no hosts (computed host add)"
    else:
        shown = sorted(why.items())[:MAX_REASONS]
        detail = "; ".join(f"{name}: {reason}" for name, reason in shown)
        if len(why) > len(shown):
            detail += f"; and {len(why) - len(shown)} more hosts"
    which = f" for instance {placed + 1} of {count}" if count > 1 else ""
    return InsufficientInstanceCapacity(f"no host can take a {size.name}{which} ({detail})")
