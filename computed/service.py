"""The service assembled from its settings: store, accounts, libvirt hosts, image store, key
pairs, sizes, instances and the background worker. ``api.create_app`` and the CLI build one."""

from __future__ import annotations

import logging
import threading
import time

from images.store import ImageStore

from computed.accounts.registry import KEY_FILE, Accounts
from computed.billing.accrued import AccruedCost
from computed.billing.reports import Billing
from computed.billing.budgets import Budgets
from computed.accounts.console_sessions import ConsoleSessions
from .clock import Clock
from computed.store.engine import Database
from computed.compute.faults import Faults
from computed.hosts.registry import Hosts
from computed.compute.instances import Instances
from computed.compute.keypairs import KeyPairs
from computed.virt.driver import HostDriver
from .errors import ServiceUnavailable
from computed.compute.lifecycle import Lifecycle
from computed.compute.state import CRASHED, DESTROYED_OUTSIDE, SELF_SHUTDOWN
from computed.virt.management_key import ManagementKey
from computed.metrics.counters import Metrics
from computed.compute.ports import Ports
from computed.store.processes import Processes
from computed.virt.provisioner import Provisioner
from computed.compute.reconcile import Reconciler
from computed.accounts.secret_box import SecretBox
from .settings import Settings
from computed.compute.sizes import SizeCatalog
from computed.compute.view import InstanceViews
from computed.metrics.store import StoreCollector
from computed.compute.worker import Worker

log = logging.getLogger(__name__)

PURGE_INTERVAL = 60.0
HOUSEKEEPING_TICK = 2.0


class Service:
    def __init__(self, settings: Settings, clock: Clock | None = None):
        self.settings = settings
        self.clock = clock or Clock()
        settings.instances_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(settings.database_url)
        self.images = ImageStore(settings.image_store)
        self.sizes = SizeCatalog.load(settings.sizes_file)
        self.accounts = Accounts(self.db, SecretBox(settings.var_dir / KEY_FILE))
        self.console_sessions = ConsoleSessions(self.db, self.clock)
        self.keypairs = KeyPairs(self.db)
        self.metrics = Metrics()
        self.hosts = Hosts(settings, self.db, self.clock)
        self.hosts.on_libvirt_error = self.metrics.libvirt_error
        self.hosts.ensure_default()
        self.management_key = ManagementKey(settings.var_dir / "management" / "id_ed25519")
        self.provisioner = Provisioner(settings, self.hosts, self.management_key, Faults(settings.fault_points))
        self.worker = Worker(settings.workers)
        self.processes = Processes(self.db)
        self.lifecycle = Lifecycle(settings, self.db, self.provisioner, self.worker, self.clock, self.processes,
                                   self.metrics)
        self.instances = Instances(settings, self.db, self.sizes, self.keypairs, self.images, self.hosts,
                                   self.provisioner, self.lifecycle, self.clock)
        self.ports = Ports(settings, self.db, self.hosts, self.provisioner, self.worker, self.instances)
        self.billing = Billing(self.db, settings.billing_policy, self.clock)
        self.views = InstanceViews(self.db, settings, self.provisioner.login_user, self.billing.costs_so_far)
        self.metrics.registry.register(StoreCollector(settings, self.db, self.hosts, AccruedCost(self.db, self.billing),
                                                      currencies={size.currency for size in self.sizes.all()}))
        self.budgets = Budgets(self.db, self.billing, self.instances, self.sizes, self.clock)
        self.instances.admit = self.budgets.admit  # launches and starts refused while a budget stops them
        self.reconciler = Reconciler(settings, self.db, self.provisioner, self.lifecycle, self.worker, self.clock,
                                     started=self.clock.now())
        #: set once the first reconciliation (of what the last run of the service left) is done
        self.reconciled = threading.Event()
        self.hosts.on_guest_stopped = self._guest_stopped
        self._stop = threading.Event()
        self._housekeeper = threading.Thread(target=self._housekeeping, name="computed-housekeeping", daemon=True)
        self._housekeeper.start()

    @property
    def default_driver(self) -> HostDriver:
        """The driver of the default host (``local``)."""
        return self.provisioner.default_driver

    def _guest_stopped(self, instance_id: str, how: str) -> None:
        reason = {"shutdown": SELF_SHUTDOWN, "destroyed": DESTROYED_OUTSIDE}.get(how, CRASHED)
        self.lifecycle.guest_stopped(instance_id, reason)

    def _housekeeping(self) -> None:
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
                next_purge = now + PURGE_INTERVAL
            if self._stop.wait(HOUSEKEEPING_TICK):
                return

    def _connections(self) -> dict[str, int]:
        """How many times this process connected to each host (a change means a reconnection)."""
        return {name: conn.connections for name, conn in self.hosts.drivers().items()}

    def close(self) -> None:
        self._stop.set()
        self.worker.shutdown()
        self.processes.close()
        self.hosts.close()
        self.db.dispose()
