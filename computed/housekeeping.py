"""The periodic housekeeping of a service process, on a thread of its own: the process's
heartbeat, the hosts' check, reconciliation, the budgets' check, the purge of instances
terminated long ago and of retired management keys no guest has any more, each on its own
schedule. ``Service`` starts and stops it."""

from __future__ import annotations

import logging
import threading
import time

from computed.billing.budgets import Budgets
from computed.errors import ServiceUnavailable
from computed.hosts.registry import Hosts
from computed.compute.instances import Instances
from computed.store.processes import Processes
from computed.compute.reconcile import Reconciler
from computed.settings import Settings
from computed.virt.management_key import ManagementKeys

log = logging.getLogger(__name__)

PURGE_INTERVAL = 60.0
HOUSEKEEPING_TICK = 2.0


class Housekeeping:
    def __init__(self, settings: Settings, *, processes: Processes, hosts: Hosts, reconciler: Reconciler,
                 budgets: Budgets, instances: Instances, management_keys: ManagementKeys | None = None):
        self.settings = settings
        self.processes = processes
        self.hosts = hosts
        self.reconciler = reconciler
        self.budgets = budgets
        self.instances = instances
        self.management_keys = management_keys
        #: set once the first reconciliation (of what the last run of the service left) is done
        self.reconciled = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="computed-housekeeping", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the loop at its next tick (without waiting for it)."""
        self._stop.set()

    def _run(self) -> None:
        """Hosts checked every host_check_interval; reconciliation at start (retried until a
        host answers), then every reconcile_interval and right after a reconnection to a
        host; budgets every budget_check_interval; purging every minute."""
        next_reconcile = next_purge = next_check = next_budgets = time.monotonic()
        connections = None
        while True:
            now = time.monotonic()
            try:
                self.processes.heartbeat()
            except Exception:
                log.exception("the process's heartbeat failed")
            if now >= next_check:
                try:
                    self.hosts.check()
                except Exception:
                    log.exception("checking the hosts failed")
                next_check = now + self.settings.host_check_interval
            if now >= next_reconcile or (self.reconciled.is_set() and self._connections() != connections):
                try:
                    self.reconciler.run(at_start=not self.reconciled.is_set())
                    self.reconciled.set()
                    next_reconcile = now + self.settings.reconcile_interval
                except ServiceUnavailable as e:
                    log.warning("reconciliation waits for libvirt: %s", e.message)
                    next_reconcile = now + HOUSEKEEPING_TICK
                except Exception:
                    log.exception("reconciliation failed")
                    next_reconcile = now + self.settings.reconcile_interval
                connections = self._connections()
            if now >= next_budgets:
                try:
                    self.budgets.check()
                except Exception:
                    log.exception("checking the budgets failed")
                next_budgets = now + self.settings.budget_check_interval
            if now >= next_purge:
                try:
                    self.instances.purge()
                except Exception:
                    log.exception("purging terminated instances failed")
                if self.management_keys is not None:
                    try:
                        self.management_keys.prune()
                    except Exception:
                        log.exception("pruning retired management keys failed")
                next_purge = now + PURGE_INTERVAL
            if self._stop.wait(HOUSEKEEPING_TICK):
                return

    def _connections(self) -> dict[str, int]:
        """How many times this process connected to each host (a change means a reconnection)."""
        return {name: conn.connections for name, conn in self.hosts.drivers().items()}
