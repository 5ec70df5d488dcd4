"""What an instance is made of on its host, and the steps that make and unmake it: an
SSH port on the host, a qcow2 overlay on the image's base disk, a NoCloud seed, a libvirt
domain. A launch that fails part-way undoes the steps it completed, last first."""

from __future__ import annotations

import functools
import hashlib
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from images.manifest import Manifest, ManifestError
from images.store import StoredImage

from . import cloudinit, domain_xml, ssh
from .faults import Faults
from .libvirt_driver import LibvirtHost
from .management_key import ManagementKey
from .models import Instance
from .settings import Settings

log = logging.getLogger(__name__)


class LaunchError(RuntimeError):
    """A launch step failed; ``reason`` is the instance's state reason."""

    def __init__(self, message: str, code: str = "Server.InternalError"):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class InstanceFiles:
    root: Path

    @property
    def disk(self) -> Path:
        return self.root / "disk.qcow2"

    @property
    def seed(self) -> Path:
        return self.root / "seed.iso"

    @property
    def console(self) -> Path:
        return self.root / "console.log"


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
    def __init__(self, settings: Settings, host: LibvirtHost, key: ManagementKey, faults: Faults | None = None):
        self.settings = settings
        self.host = host
        self.key = key
        self.faults = faults or Faults()
        self.store = store_id(settings.database_url)

    def files(self, instance_id: str) -> InstanceFiles:
        return InstanceFiles(self.settings.instances_dir / instance_id)

    def image_of(self, inst: Instance) -> StoredImage:
        path = Path(inst.image_path)
        try:
            return StoredImage(path, _manifest(path))
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
        """Disk, seed, domain for INST; then start it. Each step registers its undo."""
        image = self.image_of(inst)
        files = self.files(inst.id)
        files.root.mkdir(parents=True, exist_ok=False)
        undo.push("instance directory", lambda: shutil.rmtree(files.root, ignore_errors=True))
        files.root.chmod(0o755)
        self.faults.point("launch.directory")
        self._overlay(image, files.disk, inst.disk_gib)
        self.faults.point("launch.disk")
        keys = [k for k in (inst.public_key, self.key.public_openssh) if k]
        cloudinit.write_seed(files.seed, cloudinit.meta_data(inst.id, inst.id, keys), inst.user_data or b"")
        files.console.touch()
        self.faults.point("launch.seed")
        domain_type = self.host.domain_type(self.settings.domain_type, image.artifact_path("kernel"),
                                            image.artifact_path("initrd"), self.settings.instances_dir / ".probe")
        spec = domain_xml.DomainSpec(
            name=inst.domain_name, domain_type=domain_type, vcpus=inst.vcpus, memory_mib=inst.memory_mib,
            kernel=str(image.artifact_path("kernel")), initrd=str(image.artifact_path("initrd")),
            cmdline=image.manifest.kernel_cmdline, disk=str(files.disk), seed=str(files.seed),
            console_log=str(files.console), ssh_host=inst.ssh_host, ssh_port=inst.ssh_port,
            metadata={"id": inst.id, "store": self.store, "owner": inst.owner, "size": inst.size, "image": inst.image,
                      "image-version": inst.image_version, "reservation": inst.reservation_id})
        self.host.define(domain_xml.build(spec))
        undo.push("domain", lambda: self.remove_domain(inst.domain_name))
        self.faults.point("launch.defined")
        self.host.start(inst.domain_name)
        self.faults.point("launch.started")

    def _overlay(self, image: StoredImage, dest: Path, disk_gib: int) -> None:
        base = image.artifact_path("disk")
        virtual = image.manifest.artifacts["disk"].get("virtual_size", 0)
        size = max(disk_gib << 30, virtual)
        result = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base),
                                 str(dest), str(size)], capture_output=True, text=True)
        if result.returncode != 0:
            raise LaunchError(f"creating the instance's disk failed: {result.stderr.strip()}")

    # -- power -------------------------------------------------------------------------

    def start(self, inst: Instance) -> None:
        self.host.start(inst.domain_name)

    def stop(self, inst: Instance) -> bool:
        """ACPI power-off, waiting up to the stop timeout, then pull the plug. True if the
        guest shut down by itself."""
        self.host.shutdown(inst.domain_name)
        clean = self.host.wait_for_state(inst.domain_name, "shutoff", self.settings.stop_timeout)
        if not clean:
            self.host.destroy(inst.domain_name)
        return clean

    def reboot(self, inst: Instance) -> None:
        self.host.reboot(inst.domain_name)

    def is_off(self, inst: Instance) -> bool:
        return self.host.state(inst.domain_name) in ("shutoff", "crashed", None)

    # -- terminate ---------------------------------------------------------------------

    def remove_domain(self, name: str) -> None:
        self.host.destroy(name)
        self.host.undefine(name)

    def destroy(self, inst: Instance) -> None:
        """Everything the instance had on its host: domain, disk, seed, console log."""
        self.remove_domain(inst.domain_name)
        self.faults.point("terminate.domain")
        shutil.rmtree(self.files(inst.id).root, ignore_errors=True)
        self.faults.point("terminate.files")

    # -- readiness -------------------------------------------------------------------------

    def wait_for_ssh(self, inst: Instance, deadline: float, still_wanted: Callable[[], bool]):
        """A logged-in SSH client once the instance answers, or None if it was not wanted
        any more (stopped, terminated) or the deadline passed."""
        image = self.image_of(inst)
        while time.monotonic() < deadline and still_wanted():
            try:
                return ssh.wait_for_login(inst.ssh_host, inst.ssh_port, image.manifest.default_user,
                                          self.key.pkey(), min(deadline, time.monotonic() + 15))
            except ssh.SSHTimeout:
                if self.is_off(inst):
                    return None
        return None

    def check_engine(self, inst: Instance, client) -> tuple[bool, str]:
        image = self.image_of(inst)
        engine = image.manifest.container_engine["name"]
        # niced: under emulation the check would otherwise slow the user's first login
        rc, out, err = ssh.run(client, f"nice -n 19 {engine} run --rm {image.manifest.container_image} true",
                               timeout=300)
        return rc == 0, (err or out).strip()[-500:]

    def console_output(self, inst: Instance, limit: int = 64 * 1024) -> str:
        path = self.files(inst.id).console
        try:
            with path.open("rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - limit))
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""


def store_id(database_url: str) -> str:
    """Which store a domain belongs to (in its metadata), so that services sharing one
    libvirt host never take each other's domains for orphans."""
    shown = make_url(database_url).render_as_string(hide_password=True)
    return hashlib.sha256(shown.encode()).hexdigest()[:16]


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


@functools.lru_cache(maxsize=256)
def _manifest(path: Path) -> Manifest:
    """An image build's manifest (a build directory never changes once published)."""
    return Manifest.read(path)
