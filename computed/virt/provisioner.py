"""What an instance is made of on its host, and the steps that make and unmake it: an
SSH port on the host, a qcow2 overlay on the image's base disk, a NoCloud seed, a domain.
A launch that fails part-way undoes the steps it completed, last first. Each instance is
worked on through its own host's driver and storage (``hosts``, ``storage``)."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path

import paramiko

from images.manifest import Manifest, ManifestError
from images.library import ImageBuild

from . import cloudinit, domain_xml, file_access, ssh
from computed.compute.faults import Faults
from computed.hosts.registry import DEFAULT_HOST, Hosts
from .driver import Capabilities, HostDriver
from .errors import LaunchError
from .management_key import ManagementKey
from computed.store.identity import store_id
from computed.store.models import Instance
from computed.settings import Settings
from .storage import InstanceFiles, Seed, SharedStorage, Storage, for_host

log = logging.getLogger(__name__)


class Undo:
    """Undo steps collected as a launch goes; run last-first if it fails."""

    def __init__(self):
        self._steps: list[tuple[str, Callable[[], None]]] = []

    def push(self, what: str, fn: Callable[[], None]) -> None:
        self._steps.append((what, fn))

    def run(self) -> None:
        for what, fn in reversed(self._steps):
            try:
                fn()
            except Exception:
                log.exception("undoing %s failed", what)
        self._steps.clear()


class Provisioner:
    def __init__(self, settings: Settings, hosts: Hosts, key: ManagementKey, faults: Faults | None = None):
        self.settings = settings
        self.hosts = hosts
        self.key = key
        self.faults = faults or Faults()
        self.store = store_id(settings.database_url)
        qemu = file_access.qemu_user(settings.qemu_user, settings.qemu_group)
        self.shared = SharedStorage(settings.instances_dir, qemu.gid if qemu else None)

    @property
    def default_driver(self) -> HostDriver:
        """The driver of the default host (``local``)."""
        return self.hosts.driver(DEFAULT_HOST)

    def driver_of(self, inst: Instance) -> HostDriver:
        """The driver of the host INST was placed on."""
        return self.hosts.driver(inst.host, inst.host_uri)

    def capabilities(self, inst: Instance) -> Capabilities:
        """What the driver of INST's host can do with its domain."""
        return self.driver_of(inst).capabilities

    def storage_of(self, inst: Instance) -> Storage:
        return self.storage(inst.host)

    def storage(self, host_name: str) -> Storage:
        facts = self.hosts.facts(host_name)
        if facts.image_mode == "shared":
            return self.shared
        return for_host(facts, self.hosts.driver(host_name, facts.uri), self.settings.instances_dir,
                        self.hosts.db)

    def files(self, instance_id: str) -> InstanceFiles:
        """Where a shared-storage host keeps the instance's files (this machine's paths)."""
        return self.shared.files(instance_id)

    def image_of(self, inst: Instance) -> ImageBuild:
        path = Path(inst.image_path)
        try:
            return ImageBuild(path, _manifest(path))
        except ManifestError as e:
            raise LaunchError(f"the image {inst.image} is gone from the image store: {e}",
                              "Client.InvalidImage") from None

    def login_user(self, inst: Instance) -> str | None:
        """The image's default user (who the instance's key logs in as)."""
        try:
            return _manifest(Path(inst.image_path)).default_user
        except ManifestError:
            return None

    # -- launch --------------------------------------------------------------------------

    def create(self, inst: Instance, undo: Undo) -> None:
        """Disk, seed, domain for INST on its host; then start it. Each step registers its undo."""
        image = self.image_of(inst)
        driver = self.driver_of(inst)
        keys = [k for k in (inst.public_key, self.key.public_openssh) if k]
        seed = Seed(cloudinit.meta_data(inst.id, inst.id, keys), inst.user_data or b"")
        paths = self.storage_of(inst).create(inst.id, image, inst.disk_gib, seed, undo, self.faults)
        self.faults.point("launch.seed")
        domain_type = driver.domain_type(self.settings.domain_type, paths.kernel, paths.initrd,
                                       self.settings.instances_dir / ".probe")
        spec = domain_xml.DomainSpec(
            name=inst.domain_name, domain_type=domain_type, vcpus=inst.vcpus, memory_mib=inst.memory_mib,
            kernel=paths.kernel, initrd=paths.initrd, cmdline=image.manifest.kernel_cmdline, disk=paths.disk,
            seed=paths.seed, console_log=paths.console, ssh_host=inst.ssh_host, ssh_port=inst.ssh_port,
            forwards=forwards(inst),
            metadata={"id": inst.id, "store": self.store, "owner": inst.owner, "size": inst.size, "image": inst.image,
                      "image-version": inst.image_version, "reservation": inst.reservation_id,
                      "host": inst.host or ""})
        driver.define(domain_xml.build(spec))
        undo.push("domain", lambda: self.delete_domain(inst))
        self.faults.point("launch.defined")
        driver.start(inst.domain_name)
        self.faults.point("launch.started")

    # -- power -------------------------------------------------------------------------

    def start(self, inst: Instance) -> None:
        self.driver_of(inst).start(inst.domain_name)

    def stop(self, inst: Instance) -> bool:
        """ACPI power-off, waiting up to the stop timeout, then pull the plug. True if the
        guest shut down by itself."""
        driver = self.driver_of(inst)
        driver.shutdown(inst.domain_name)
        clean = driver.wait_for_state(inst.domain_name, "shutoff", self.settings.stop_timeout)
        if not clean:
            driver.power_off(inst.domain_name)
        return clean

    def reboot(self, inst: Instance) -> None:
        self.driver_of(inst).reboot(inst.domain_name)

    def is_off(self, inst: Instance) -> bool:
        return self.driver_of(inst).state(inst.domain_name) in ("shutoff", "crashed", None)

    # -- terminate ---------------------------------------------------------------------

    def delete_domain(self, inst: Instance) -> None:
        driver = self.driver_of(inst)
        driver.power_off(inst.domain_name)
        driver.undefine(inst.domain_name)

    def delete(self, inst: Instance) -> None:
        """Everything the instance had on its host: domain, disk, seed, console log."""
        self.delete_domain(inst)
        self.faults.point("terminate.domain")
        self.storage_of(inst).remove(inst.id)
        self.faults.point("terminate.files")

    # -- readiness -------------------------------------------------------------------------

    def wait_for_ssh(self, inst: Instance, deadline: float, still_wanted: Callable[[], bool],
                     not_boot: str | None = None):
        """A logged-in SSH client once the instance answers, or None if it was not wanted
        any more (stopped, terminated) or the deadline passed. NOT_BOOT: a boot id the guest
        must have left behind (a reboot's old boot, whose sshd answers until it goes down)."""
        image = self.image_of(inst)
        while time.monotonic() < deadline and still_wanted():
            try:
                client = ssh.wait_for_login(inst.ssh_host, inst.ssh_port, image.manifest.default_user,
                                            self.key.pkey(), min(deadline, time.monotonic() + 15))
            except ssh.SSHTimeout:
                if self.is_off(inst):
                    return None
                continue
            if not_boot is None or _boot_id(client) != not_boot:
                return client
            client.close()  # still the old boot
            time.sleep(1)
        return None

    def boot_id(self, inst: Instance, timeout: float = 10) -> str | None:
        """The running guest's boot id (asked over SSH with the service's key), or None if it
        does not answer within TIMEOUT."""
        try:
            client = ssh.wait_for_login(inst.ssh_host, inst.ssh_port, self.image_of(inst).manifest.default_user,
                                        self.key.pkey(), time.monotonic() + timeout)
        except (ssh.SSHTimeout, LaunchError):
            return None
        try:
            return _boot_id(client)
        finally:
            client.close()

    def check_engine(self, inst: Instance, client) -> tuple[bool, str]:
        image = self.image_of(inst)
        engine = image.manifest.container_engine["name"]
        # niced: under emulation the check would otherwise slow the user's first login
        rc, out, err = ssh.run(client, f"nice -n 19 {engine} run --rm {image.manifest.container_image} true",
                               timeout=300)
        return rc == 0, (err or out).strip()[-500:]

    def console_output(self, inst: Instance, limit: int = 64 * 1024) -> str:
        return self.storage_of(inst).console(inst.id, limit)


def _boot_id(client) -> str | None:
    """The guest's boot id (a new one each boot), or None if it cannot be read."""
    try:
        rc, out, _ = ssh.run(client, "cat /proc/sys/kernel/random/boot_id", timeout=15)
    except (OSError, EOFError, paramiko.SSHException):
        return None
    return out.strip() if rc == 0 and out.strip() else None


def forwards(inst: Instance) -> tuple[tuple[str, int, int], ...]:
    """INST's forwarded ports (``ports``) as its domain's XML takes them."""
    return tuple((p.host_address, p.host_port, p.guest_port) for p in sorted(inst.ports, key=lambda p: p.host_port))


@functools.lru_cache(maxsize=256)
def _manifest(path: Path) -> Manifest:
    """An image build's manifest (a build directory never changes once published)."""
    return Manifest.read(path)
