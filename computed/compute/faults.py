"""Fault injection for crash tests: the service kills itself (SIGKILL, as the OOM killer or
a power cut would, with no chance to clean up) when it reaches a named point of launch,
stop, start or terminate that the ``fault_points`` setting lists. Empty (the default),
every point is a no-op. ``POINTS`` names them all; the crash tests go through each."""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

POINTS = (
    "launch.committed",      # the API wrote the pending instance; no work done yet
    "launch.directory",      # the instance's directory exists, nothing in it
    "launch.disk",           # the overlay disk exists
    "launch.seed",           # the cloud-init seed exists
    "launch.defined",        # the domain is defined, not started
    "launch.started",        # the domain runs; the store still says pending
    "stop.committed",        # the store says stopping; the guest still runs
    "stop.off",              # the guest is off; the store still says stopping
    "start.committed",       # the store says pending; the domain is off
    "start.started",         # the domain runs; the store still says pending
    "terminate.committed",   # the store says shutting-down; nothing removed yet
    "terminate.domain",      # the domain is gone; its files are still there
    "terminate.files",       # domain and files gone; the store still says shutting-down
)


class Faults:
    def __init__(self, points: tuple[str, ...] = ()):
        unknown = set(points) - set(POINTS)
        if unknown:
            raise ValueError(f"unknown fault points: {', '.join(sorted(unknown))} (known: {', '.join(POINTS)})")
        self.points = frozenset(points)

    def point(self, name: str) -> None:
        assert name in POINTS, name
        if name in self.points:
            log.critical("fault injection: killing the service at %s", name)
            os.kill(os.getpid(), signal.SIGKILL)
