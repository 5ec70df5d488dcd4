"""Where an instance's files live on its host, and how images get there.

- ``SharedStorage`` (a host's image_mode ``shared``): the host sees this machine's paths,
  as the local host does (or another one mounting the same directories). The instance's
  files are under the instances directory, its disk a qcow2 overlay on the image library's
  own base disk.
- ``CopyStorage`` (image_mode ``copy``, ``computed/virt/libvirt/copy_storage.py``): the host keeps its
  own copy of each image and the instances' files, under its storage_dir, through libvirt's
  storage API over the host's own connection (no other channel to the host is needed).

Either way the provisioner gets the paths *on the host* that the domain's XML names."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from images.library import ImageBuild

from . import cloudinit, console_log
from .driver import HostDriver
from .errors import LaunchError
from .file_access import PRIVATE_FILE, QEMU_DIR, QEMU_READ, QEMU_WRITE, create_file, make_dir, restrict


@dataclass(frozen=True)
class HostPaths:
    """Where the domain finds what it boots, on its host."""
    kernel: str
    initrd: str
    disk: str
    seed: str
    console: str


@dataclass(frozen=True)
class Seed:
    meta_data: str
    user_data: bytes
    #: cloud-config of the service's own (the guest's host key): holds a secret, never logged
    vendor_data: str | None = field(default=None, repr=False)


class Storage(Protocol):
    def create(self, instance_id: str, image: ImageBuild, disk_gib: int, seed: Seed, undo,
               faults=None) -> HostPaths:
        """The instance's disk (an overlay on the image's), seed and console log, each
        registering its undo on UNDO; the image reaches the host first if it must. FAULTS
        (computed/compute/faults.py) gets the launch's fault points."""

    def remove(self, instance_id: str) -> None:
        """Every file of the instance (nothing if none)."""

    def instance_ids(self) -> set[str]:
        """The instances that have files here (to find orphans)."""

    def console(self, instance_id: str, limit: int) -> str:
        """The last LIMIT bytes of the instance's console log."""


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


class SharedStorage:
    """Files under this machine's instances directory; images read where the store keeps them.
    Modes as ``file_access`` has them, with QEMU_GID (QEMU's group) where QEMU opens them."""

    def __init__(self, instances_dir: Path, qemu_gid: int | None = None):
        self.root = instances_dir
        self.qemu_gid = qemu_gid

    def files(self, instance_id: str) -> InstanceFiles:
        return InstanceFiles(self.root / instance_id)

    def create(self, instance_id: str, image: ImageBuild, disk_gib: int, seed: Seed, undo,
               faults=None) -> HostPaths:
        files = self.files(instance_id)
        make_dir(self.root, QEMU_DIR, self.qemu_gid)
        try:
            os.mkdir(files.root, 0o700)
        except FileExistsError:
            raise LaunchError(f"the instance's directory {files.root} exists already") from None
        undo.push("instance directory", lambda: shutil.rmtree(files.root, ignore_errors=True))
        if faults:
            faults.point("launch.directory")
        # the directory is root's alone until each file has its mode
        overlay(image, files.disk, disk_gib)
        restrict(files.disk, QEMU_WRITE, self.qemu_gid)
        if faults:
            faults.point("launch.disk")
        cloudinit.write_seed(files.seed, seed.meta_data, seed.user_data, vendor_data=seed.vendor_data)
        restrict(files.seed, QEMU_READ, self.qemu_gid)
        # virtlogd (root) writes it; QEMU never opens it
        create_file(files.console, PRIVATE_FILE)
        restrict(files.root, QEMU_DIR, self.qemu_gid)
        return HostPaths(kernel=str(image.artifact_path("kernel")), initrd=str(image.artifact_path("initrd")),
                         disk=str(files.disk), seed=str(files.seed), console=str(files.console))

    def remove(self, instance_id: str) -> None:
        shutil.rmtree(self.files(instance_id).root, ignore_errors=True)

    def instance_ids(self) -> set[str]:
        if not self.root.is_dir():
            return set()
        return {p.name for p in self.root.iterdir() if p.is_dir()}

    def console(self, instance_id: str, limit: int) -> str:
        return console_log.tail(self.files(instance_id).console, limit)


def overlay(image: ImageBuild, dest: Path, disk_gib: int) -> None:
    """A qcow2 overlay at DEST on the image's base disk, of the size asked (at least the image's)."""
    base = image.artifact_path("disk")
    size = max(disk_gib << 30, image.manifest.artifacts["disk"].get("virtual_size", 0))
    result = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base),
                             str(dest), str(size)], capture_output=True, text=True)
    if result.returncode != 0:
        raise LaunchError(f"creating the instance's disk failed: {result.stderr.strip()}")


def for_host(host, driver: HostDriver, instances_dir: Path, db) -> Storage:
    """The storage of HOST (a ``Host`` row, or its facts), reached through DRIVER (for a
    host in copy mode, a libvirt driver: the copy goes through libvirt's storage API)."""
    if host.image_mode == "copy":
        from computed.virt.libvirt.copy_storage import CopyStorage
        return CopyStorage(driver, host.name, Path(host.storage_dir), db)
    return SharedStorage(instances_dir)

