"""The service assembled from its settings: store, accounts, libvirt host, image store, key
pairs, sizes, instances and the background worker. ``api.create_app`` and the CLI build one."""

from __future__ import annotations

import logging
import threading

from images.store import ImageStore

from .accounts import KEY_FILE, Accounts
from .billing import Billing
from .clock import Clock
from .db import Database
from .instances import Instances
from .keypairs import KeyPairs
from .libvirt_driver import LibvirtHost
from .lifecycle import Lifecycle
from .management_key import ManagementKey
from .provisioner import Provisioner
from .secret_box import SecretBox
from .settings import Settings
from .sizes import SizeCatalog
from .worker import Worker

log = logging.getLogger(__name__)

PURGE_INTERVAL = 60.0


class Service:
    def __init__(self, settings: Settings, clock: Clock | None = None):
        self.settings = settings
        self.clock = clock or Clock()
        settings.instances_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(settings.database_url)
        self.images = ImageStore(settings.image_store)
        self.sizes = SizeCatalog.load(settings.sizes_file)
        self.accounts = Accounts(self.db, SecretBox(settings.var_dir / KEY_FILE))
        self.keypairs = KeyPairs(self.db)
        self.host = LibvirtHost(settings.libvirt_uri)
        self.management_key = ManagementKey(settings.var_dir / "management" / "id_ed25519")
        self.provisioner = Provisioner(settings, self.host, self.management_key)
        self.worker = Worker(settings.workers)
        self.lifecycle = Lifecycle(settings, self.db, self.provisioner, self.worker, self.clock)
        self.instances = Instances(settings, self.db, self.sizes, self.keypairs, self.images,
                                   self.provisioner, self.lifecycle, self.clock)
        self.billing = Billing(self.db, settings.billing_policy, self.clock)
        self._stop = threading.Event()
        self._purger = threading.Thread(target=self._purge_loop, name="computed-purge", daemon=True)
        self._purger.start()

    def _purge_loop(self) -> None:
        while not self._stop.wait(PURGE_INTERVAL):
            try:
                self.instances.purge()
            except Exception:
                log.exception("purging terminated instances failed")

    def close(self) -> None:
        self._stop.set()
        self.worker.shutdown()
        self.host.close()
        self.db.dispose()
