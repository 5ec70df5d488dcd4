"""What an instance is made of on its host, and the steps that make and unmake it: an
SSH port on the host, a qcow2 overlay on the image's base disk, a NoCloud seed, a domain.
A launch that fails part-way undoes the steps it completed, last first. Each instance is
worked on through its own host's driver and storage (``hosts``, ``storage``)."""

from __future__ import annotations

import functools
import logging
import yaml
import time
from collections.abc import Callable
from pathlib import Path

import paramiko

from images.manifest import Manifest, ManifestError
from images.library import ImageBuild

from . import cloudinit, domain_xml, file_access, ssh
from computed.compute.faults import Faults
from computed.hosts.registry import DEFAULT_HOST, Hosts, is_local
from .driver import Capabilities, HostDriver
from .errors import LaunchError
from .guest_firewall import GuestFirewall, GuestFirewallError
from .management_key import Key, ManagementKeys, authorized_line
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
    def __init__(self, settings: Settings, hosts: Hosts, keys: ManagementKeys, faults: Faults | None = None,
                 firewall: GuestFirewall | None = None):
        self.settings = settings
        self.hosts = hosts
        self.keys = keys
        self.faults = faults or Faults()
        self.firewall = firewall or GuestFirewall(settings)
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
        self.check_network(inst)
        image = self.image_of(inst)
        driver = self.driver_of(inst)
        management = self.keys.current(inst.host)
        host_key = ssh.generate_keypair()
        # recorded before the seed is written: a rotation's prune sees the key in use
        self._record_keys(inst, management.id, host_key.public_openssh)
        manifest = image.manifest
        keys = [k for k in (inst.public_key, authorized_line(management.public_openssh,
                                                             manifest.container_engine["name"],
                                                             manifest.container_image)) if k]
        seed = Seed(cloudinit.meta_data(inst.id, inst.id, keys), inst.user_data or b"",
                    vendor_data=host_key_vendor_data(host_key))
        paths = self.storage_of(inst).create(inst.id, image, inst.disk_gib, seed, undo, self.faults)
        del seed, host_key  # the private host key is in the seed alone from here on
        if not management.path.is_file():
            raise LaunchError("the host's management key was deleted during the launch (a rotation?): "
                              "launch again", "Server.InternalError")
        self.faults.point("launch.seed")
        domain_type = driver.domain_type(self.settings.domain_type, paths.kernel, paths.initrd,
                                       self.settings.instances_dir / ".probe")
        spec = domain_xml.DomainSpec(
            name=inst.domain_name, domain_type=domain_type, vcpus=inst.vcpus, memory_mib=inst.memory_mib,
            kernel=paths.kernel, initrd=paths.initrd, cmdline=image.manifest.kernel_cmdline, disk=paths.disk,
            seed=paths.seed, console_log=paths.console, ssh_host=inst.ssh_host, ssh_port=inst.ssh_port,
            forwards=forwards(inst), outbound=self.outbound,
            metadata={"id": inst.id, "store": self.store, "owner": inst.owner, "size": inst.size, "image": inst.image,
                      "image-version": inst.image_version, "reservation": inst.reservation_id,
                      "host": inst.host or ""})
        driver.define(domain_xml.build(spec))
        undo.push("domain", lambda: self.delete_domain(inst))
        self.faults.point("launch.defined")
        driver.start(inst.domain_name)
        self.faults.point("launch.started")

    # -- network -----------------------------------------------------------------------

    @property
    def outbound(self) -> bool:
        """Whether guests may open connections out of their host (else: restricted)."""
        return self.settings.guest_outbound

    def check_network(self, inst: Instance) -> None:
        """Before INST's guest starts: with guest outbound on, the guest firewall of its host
        in place (installed if missing); LaunchError saying why not otherwise."""
        if not self.outbound:
            return
        if not is_local(inst.host_uri):
            raise LaunchError(f"guest outbound network is on, but the service installs the guest firewall on its "
                              f"own machine only, not on the host {inst.host}: guests there are not started")
        try:
            self.firewall.ensure()
        except GuestFirewallError as e:
            raise LaunchError(f"guest outbound network is on, but {e}") from None

    def renew_network(self, inst: Instance, driver: HostDriver) -> None:
        """INST's domain definition with its user-mode network as the settings make it now
        (restricted or not; a domain defined by an older service had no restriction)."""
        old = driver.definition(inst.domain_name)
        if old is None:
            return  # the start fails on its own, saying so
        try:
            new = domain_xml.with_forwards(old, inst.ssh_host, inst.ssh_port, forwards(inst), self.outbound)
        except ValueError:
            return  # not a domain with our user-mode network
        if domain_xml.netdev_of(new) != domain_xml.netdev_of(old):
            log.info("%s: its network made as the settings say: %s", inst.id, domain_xml.netdev_of(new))
            driver.define(new)

    # -- power -------------------------------------------------------------------------

    def start(self, inst: Instance) -> None:
        driver = self.driver_of(inst)
        if driver.capabilities.port_forwards:
            self.renew_network(inst, driver)
        self.check_network(inst)
        driver.start(inst.domain_name)

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

    def _record_keys(self, inst: Instance, management_key_id: str | None, host_key: str | None) -> None:
        with self.hosts.db.session() as s:
            row = s.get(Instance, inst.id)
            if row is not None:
                row.management_key_id, row.ssh_host_key = management_key_id, host_key
        inst.management_key_id, inst.ssh_host_key = management_key_id, host_key

    # -- readiness -------------------------------------------------------------------------

    def management_key(self, inst: Instance) -> Key:
        key = self.keys.of(inst)
        if key is None:
            raise LaunchError(f"the management key of {inst.id} is gone: the service cannot check it",
                              "Server.InternalError")
        return key

    def login(self, inst: Instance, deadline: float) -> paramiko.SSHClient:
        """The service's SSH session with INST, logged in with its management key and checked
        against its host key (ssh.SSHTimeout if none by DEADLINE). An instance from before the
        service made host keys has the first key it shows recorded, and checked from then on."""
        key = self.management_key(inst)
        user = self.image_of(inst).manifest.default_user
        if inst.ssh_host_key is not None:
            return ssh.wait_for_login(inst.ssh_host, inst.ssh_port, user, key.pkey(), deadline,
                                      host_key=inst.ssh_host_key, probe=key.command("ready"))
        client = ssh.wait_for_login(inst.ssh_host, inst.ssh_port, user, key.pkey(), deadline,
                                    probe=key.command("ready"))
        seen = client.get_transport().get_remote_server_key()
        with self.hosts.db.session() as s:
            row = s.get(Instance, inst.id)
            if row is not None and row.ssh_host_key is None:
                row.ssh_host_key = f"{seen.get_name()} {seen.get_base64()}"
                log.info("%s: its host key %s recorded at first sight (launched before host keys were given)",
                         inst.id, ssh.fingerprint(row.ssh_host_key))
        return client

    def wait_for_ssh(self, inst: Instance, deadline: float, still_wanted: Callable[[], bool],
                     not_boot: str | None = None):
        """A logged-in SSH client once the instance answers, or None if it was not wanted
        any more (stopped, terminated) or the deadline passed. NOT_BOOT: a boot id the guest
        must have left behind (a reboot's old boot, whose sshd answers until it goes down)."""
        while time.monotonic() < deadline and still_wanted():
            try:
                client = self.login(inst, min(deadline, time.monotonic() + 15))
            except LaunchError as e:
                log.warning("%s cannot be checked: %s", inst.id, e)
                return None
            except ssh.SSHTimeout:
                if self.is_off(inst):
                    return None
                continue
            if not_boot is None or _boot_id(client, self.management_key(inst)) != not_boot:
                return client
            client.close()  # still the old boot
            time.sleep(1)
        return None

    def boot_id(self, inst: Instance, timeout: float = 10) -> str | None:
        """The running guest's boot id (asked over SSH with the service's key), or None if it
        does not answer within TIMEOUT."""
        try:
            client = self.login(inst, time.monotonic() + timeout)
            key = self.management_key(inst)
        except (ssh.SSHTimeout, LaunchError):
            return None
        try:
            return _boot_id(client, key)
        finally:
            client.close()

    def check_engine(self, inst: Instance, client) -> tuple[bool, str]:
        image = self.image_of(inst)
        engine = image.manifest.container_engine["name"]
        # niced (the forced command does it): under emulation the check would otherwise slow
        # the user's first login
        command = self.management_key(inst).command("engine", engine, image.manifest.container_image)
        rc, out, err = ssh.run(client, command, timeout=300)
        return rc == 0, (err or out).strip()[-500:]

    def console_output(self, inst: Instance, limit: int = 64 * 1024) -> str:
        return self.storage_of(inst).console(inst.id, limit)


def host_key_vendor_data(host_key: ssh.KeyPair) -> str:
    """The seed's vendor data: the guest's SSH host key, which cloud-init's ssh module
    installs (``ssh_keys``). Vendor data, not user data: the user's data stays as given."""
    return "#cloud-config\n" + yaml.safe_dump(
        {"ssh_keys": {"ed25519_private": host_key.private_openssh, "ed25519_public": host_key.public_openssh}},
        default_flow_style=False, sort_keys=False)


def _boot_id(client, key: Key) -> str | None:
    """The guest's boot id (a new one each boot), or None if it cannot be read."""
    try:
        rc, out, _ = ssh.run(client, key.command("boot-id"), timeout=15)
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
