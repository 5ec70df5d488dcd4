"""The service assembled from its settings: store, accounts, libvirt hosts, image library, key
pairs, sizes, instances, budgets, the background worker and the housekeeping loop
(``housekeeping``). ``api.create_app`` and the CLI build one."""

from __future__ import annotations

import logging

from images.library import ImageLibrary

from computed.accounts.access_keys import AccessKeys
from computed.accounts.registry import KEY_FILE, Accounts
from computed.billing.accrued import AccruedCost
from computed.billing.admission import BudgetAdmission
from computed.billing.reports import Billing
from computed.billing.budgets import Budgets
from computed.accounts.console_sessions import ConsoleSessions
from .clock import Clock
from computed.store.engine import Database
from computed.compute.faults import Faults
from computed.hosts.registry import Hosts
from computed.compute.instances import Instances
from computed.compute.keypairs import KeyPairs
from computed.virt import file_access
from computed.virt.driver import HostDriver
from computed.virt.guest_firewall import GuestFirewall, GuestFirewallError
from .housekeeping import Housekeeping
from computed.compute.lifecycle import Lifecycle
from computed.compute.state import CRASHED, DESTROYED_OUTSIDE, SELF_SHUTDOWN
from computed.virt.management_key import ManagementKeys
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


class Service:
    def __init__(self, settings: Settings, clock: Clock | None = None):
        self.settings = settings
        self.clock = clock or Clock()
        self.qemu = file_access.qemu_user(settings.qemu_user, settings.qemu_group)
        file_access.prepare_state(settings.var_dir, settings.instances_dir, self.qemu,
                                  image_library=settings.image_library)
        self.db = Database(settings.database_url)
        self.images = ImageLibrary(settings.image_library)
        self.sizes = SizeCatalog.load(settings.sizes_file)
        box = SecretBox(settings.var_dir / KEY_FILE)
        self.accounts = Accounts(self.db, box)
        self.access_keys = AccessKeys(self.db, box, self.clock)
        self.console_sessions = ConsoleSessions(self.db, self.clock, settings.account_max_console_logins)
        self.keypairs = KeyPairs(self.db, settings.account_max_key_pairs)
        self.metrics = Metrics()
        # a guest's stop is the lifecycle's, built below: the method looks it up when a guest stops
        self.hosts = Hosts(settings, self.db, self.clock, on_guest_stopped=self._guest_stopped,
                           on_libvirt_error=self.metrics.libvirt_error)
        self.hosts.ensure_default()
        self.management_keys = ManagementKeys(settings.var_dir / "management", self.db, self.clock)
        self.firewall = GuestFirewall(settings)
        if settings.guest_outbound:
            try:
                self.firewall.ensure()
            except GuestFirewallError as e:  # the service still serves; guests are not started until it is fixed
                log.error("guest outbound network is on, but %s", e)
        self.provisioner = Provisioner(settings, self.hosts, self.management_keys, Faults(settings.fault_points),
                                       self.firewall)
        self.worker = Worker(settings.workers)
        self.processes = Processes(self.db)
        self.lifecycle = Lifecycle(settings, self.db, self.provisioner, self.worker, self.clock, self.processes,
                                   self.metrics)
        self.billing = Billing(self.db, settings.billing_policy, self.clock)
        # launches and starts refused while a budget stops them
        admission = BudgetAdmission(self.db, self.billing, self.clock)
        self.instances = Instances(settings, self.db, self.sizes, self.keypairs, self.images, self.hosts,
                                   self.provisioner, self.lifecycle, self.clock, admit=admission.admit)
        self.ports = Ports(settings, self.db, self.hosts, self.provisioner, self.worker, self.instances)
        self.views = InstanceViews(self.db, settings, self.provisioner.login_user, self.billing.costs_so_far)
        self.metrics.registry.register(StoreCollector(settings, self.db, self.hosts, AccruedCost(self.db, self.billing),
                                                      currencies={size.currency for size in self.sizes.all()}))
        self.budgets = Budgets(self.db, self.billing, self.instances, self.sizes, self.clock, admission=admission)
        self.reconciler = Reconciler(settings, self.db, self.provisioner, self.lifecycle, self.worker, self.clock,
                                     started=self.clock.now())
        self.housekeeping = Housekeeping(settings, processes=self.processes, hosts=self.hosts,
                                         reconciler=self.reconciler, budgets=self.budgets, instances=self.instances,
                                         management_keys=self.management_keys)
        #: set once the first reconciliation (of what the last run of the service left) is done
        self.reconciled = self.housekeeping.reconciled
        self.housekeeping.start()

    @property
    def default_driver(self) -> HostDriver:
        """The driver of the default host (``local``)."""
        return self.provisioner.default_driver

    def _guest_stopped(self, instance_id: str, how: str) -> None:
        reason = {"shutdown": SELF_SHUTDOWN, "destroyed": DESTROYED_OUTSIDE}.get(how, CRASHED)
        self.lifecycle.guest_stopped(instance_id, reason)

    def close(self) -> None:
        self.housekeeping.stop()
        self.worker.shutdown()
        self.processes.close()
        self.hosts.close()
        self.db.dispose()
