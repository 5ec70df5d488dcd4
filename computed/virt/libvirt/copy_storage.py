"""A copy-mode host's storage: the host keeps its own copy of each image build and the
instances' files, all through libvirt's storage API over the host's own connection, so
``qemu+ssh://`` or ``qemu+tls://`` is the only channel to the host that is needed.

Two directory pools under the host's storage_dir, named after it (stable, and distinct for
two directories on one libvirtd): ``<storage_dir>/images`` holds the image files, each
volume named by its sha256 (one copy per content, whichever builds share it), and
``<storage_dir>/instances`` the instances' disk, seed and console log, named after the
instance (``<id>-disk.qcow2``...), so the instances that have files there can be listed.

An image reaches the host once: uploaded through a stream, then read back through another
and compared with the manifest's sha256; only then is the host's ``HostImage`` row written.
That row is the proof. A volume without it (an upload cut short, a host copied by hand) is
read back and checked before it is used, and replaced if it differs. With the row, a
volume is trusted if its size is right: an upload writes a new, empty volume from its
start, so an upload cut short always leaves a volume too small. Within a process one
copy of a volume runs at a time (a lock per volume). Two processes copying the same file to
one host at the same moment can make each other's launch fail (each deletes the copy it
finds half-written, or finds the name taken), never boot from a copy cut short.

Permissions: QEMU runs as libvirt's user. Images: pool 0755, volumes 0644 (read-only bases
any guest may read); instances: pool 0711 (nobody lists it), volumes 0600, handed to QEMU's
user by libvirt's DAC driver while the guest runs; virtlogd (root) writes the console's."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import libvirt

from images.library import ImageBuild

from computed.virt import cloudinit
from computed.errors import ServiceUnavailable
from .connection import LibvirtDriver
from .storage_xml import pool_xml, volume_xml
from computed.store.models import HostImage
from computed.virt.errors import LaunchError
from computed.virt.storage import HostPaths, Seed

log = logging.getLogger(__name__)

#: the image files a host needs to boot a build, and the suffix of their volume names
IMAGE_ROLES = {"disk": ".qcow2", "kernel": ".kernel", "initrd": ".initrd"}
#: an instance's volumes: role -> name suffix after "<instance id>-"
INSTANCE_VOLUMES = {"disk": "disk.qcow2", "seed": "seed.iso", "console": "console.log"}
#: (virtlogd renames a full console log to console.log.0, .0 to .1...: virt/console_log.py)
INSTANCE_VOLUME = re.compile(r"(.+)-(" + "|".join(re.escape(s) for s in INSTANCE_VOLUMES.values()) + r")(\.\d+)?")
CHUNK = 1 << 20
POOL_MODE = "0755"  # QEMU's user must reach the files in it
INSTANCES_POOL_MODE = "0711"  # QEMU's user goes through; no other user lists the instances
IMAGE_MODE = "0644"  # a shared, read-only base
PRIVATE_MODE = "0600"  # the instance's own; libvirt hands it to QEMU's user while it runs

_guard = threading.Lock()
_locks: dict[tuple, threading.Lock] = {}


def _lock(*key) -> threading.Lock:
    """The process's lock for KEY (made on first use)."""
    with _guard:
        return _locks.setdefault(key, threading.Lock())


def pool_names(storage_dir: Path) -> tuple[str, str]:
    """(images pool, instances pool) of STORAGE_DIR: the same every time, and different for
    another directory on the same libvirtd."""
    key = hashlib.sha256(os.path.normpath(str(storage_dir)).encode()).hexdigest()[:12]
    return f"computed-images-{key}", f"computed-instances-{key}"


def image_volume_name(role: str, artifact: dict) -> str:
    return _hex(artifact["sha256"]) + IMAGE_ROLES[role]


def _hex(sha: str) -> str:
    """A manifest's checksum as bare hex digits (it may carry a "sha256:" prefix)."""
    return sha.removeprefix("sha256:").lower()


def _code(e: libvirt.libvirtError) -> int:
    return e.get_error_code()


class CopyStorage:
    """The Storage of a host in copy mode (see the module's docstring)."""

    def __init__(self, host: LibvirtDriver, host_name: str, storage_dir: Path, db):
        self.host = host
        self.host_name = host_name
        self.storage_dir = Path(storage_dir)
        self.db = db
        self.images_pool, self.instances_pool = pool_names(self.storage_dir)

    # -- pools ---------------------------------------------------------------------------

    def _pool(self, conn: libvirt.virConnect, name: str, make: bool = True) -> libvirt.virStoragePool | None:
        """The pool NAME, active; defined, built and started first if MAKE and it is
        missing (persistent and autostarted, so it is back after the host restarts). None
        if it does not exist and MAKE is false."""
        path = self.storage_dir / ("images" if name == self.images_pool else "instances")
        with _lock("pool", self.host.uri, name):
            try:
                pool = conn.storagePoolLookupByName(name)
            except libvirt.libvirtError as e:
                if _code(e) != libvirt.VIR_ERR_NO_STORAGE_POOL:
                    raise
                if not make:
                    return None
                try:
                    mode = POOL_MODE if name == self.images_pool else INSTANCES_POOL_MODE
                    pool = conn.storagePoolDefineXML(pool_xml(name, path, mode), 0)
                    log.info("host %s: defined the storage pool %s at %s", self.host_name, name, path)
                except libvirt.libvirtError as defining:
                    # another process of the service defined it meanwhile: use that one
                    try:
                        pool = conn.storagePoolLookupByName(name)
                    except libvirt.libvirtError:
                        raise defining from None
            if not pool.isActive():
                try:
                    # the directory (and its parents) if missing; an existing one is kept
                    pool.build(libvirt.VIR_STORAGE_POOL_BUILD_NO_OVERWRITE)
                except libvirt.libvirtError as e:
                    log.debug("building the pool %s: %s", name, e.get_error_message())
                pool.create(0)
            if not pool.autostart():
                pool.setAutostart(1)
            return pool

    @staticmethod
    def _refresh(pool: libvirt.virStoragePool) -> None:
        """Re-read the pool's directory; a refresh refused while libvirt builds a volume
        there leaves the list libvirt has, which still holds every volume made through it."""
        try:
            pool.refresh(0)
        except libvirt.libvirtError as e:
            log.debug("refreshing the pool %s: %s", pool.name(), e.get_error_message())

    @staticmethod
    def _volume(pool: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol | None:
        try:
            return pool.storageVolLookupByName(name)
        except libvirt.libvirtError as e:
            if _code(e) == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return None
            raise

    @staticmethod
    def _delete(vol: libvirt.virStorageVol) -> None:
        try:
            vol.delete(0)
        except libvirt.libvirtError as e:
            if _code(e) != libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise

    @staticmethod
    def _size(vol: libvirt.virStorageVol) -> int | None:
        """The volume's size in bytes on the host now (libvirt stats the file on asking; for
        a qcow2 file its capacity is the guest's size, the physical one is the file's), or
        None if its file is gone (libvirt lists a volume until its pool is refreshed)."""
        try:
            return vol.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2]
        except libvirt.libvirtError as e:
            if _code(e) == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return None
            raise

    # -- streams ---------------------------------------------------------------------------

    def _send(self, conn: libvirt.virConnect, vol: libvirt.virStorageVol, source: Path, size: int) -> None:
        """Upload the SIZE bytes of the local file SOURCE into VOL, from its start."""
        stream = conn.newStream(0)
        vol.upload(stream, 0, size, 0)
        try:
            with source.open("rb") as f:
                for data in iter(lambda: f.read(CHUNK), b""):
                    while data:
                        sent = stream.send(data)  # a blocking stream: -2 (would block) never comes
                        data = data[sent:]
            stream.finish()
        except BaseException:
            _abort(stream)
            raise

    def _chunks(self, conn: libvirt.virConnect, vol: libvirt.virStorageVol, offset: int = 0,
                length: int = 0) -> Iterator[bytes]:
        """The volume's bytes as the host has them (LENGTH 0: to its end)."""
        stream = conn.newStream(0)
        vol.download(stream, offset, length, 0)
        try:
            while True:
                data = stream.recv(CHUNK)
                if isinstance(data, int):  # -2 (would block) only happens on a non-blocking stream
                    raise LaunchError(f"reading {vol.name()} back from the host {self.host_name} failed")
                if not data:
                    break
                yield data
            stream.finish()
        except BaseException:
            _abort(stream)
            raise

    def _digest(self, conn: libvirt.virConnect, vol: libvirt.virStorageVol) -> str:
        """The sha256 (hex) of what the host holds in VOL, read back through libvirt."""
        h = hashlib.sha256()
        for data in self._chunks(conn, vol):
            h.update(data)
        return h.hexdigest()

    # -- images ----------------------------------------------------------------------------

    def _recorded(self, disk_sha256: str) -> bool:
        with self.db.reading() as s:
            return s.get(HostImage, (self.host_name, disk_sha256)) is not None

    def _record(self, image: ImageBuild, disk_sha256: str) -> None:
        with self.db.session() as s:
            s.merge(HostImage(host=self.host_name, disk_sha256=disk_sha256, image=image.name,
                              image_version=image.manifest.version))

    def ensure_image(self, conn: libvirt.virConnect, image: ImageBuild) -> dict[str, str]:
        """Role -> path on the host of each file IMAGE boots from, copied and verified first
        if the host does not hold it verified already."""
        disk_sha256 = image.manifest.artifacts["disk"]["sha256"]
        pool = self._pool(conn, self.images_pool)
        recorded = self._recorded(disk_sha256)
        if not recorded:
            self._refresh(pool)  # a volume left by a process that died is not in libvirt's list
        paths = {}
        for role in IMAGE_ROLES:
            artifact = image.manifest.artifacts[role]
            name = image_volume_name(role, artifact)
            with _lock("volume", self.host.uri, self.images_pool, name):
                vol = self._volume(pool, name)
                if vol is None and recorded:
                    self._refresh(pool)
                    vol = self._volume(pool, name)
                if vol is not None and not self._holds(conn, vol, artifact, recorded):
                    log.warning("host %s: %s is not %s's %s as built: copying it again",
                                self.host_name, name, image.name, role)
                    self._delete(vol)
                    vol = None
                if vol is None:
                    vol = self._copy(conn, pool, name, image.artifact_path(role), artifact, f"{image.name}'s {role}")
                paths[role] = vol.path()
        if not recorded:
            self._record(image, disk_sha256)
            log.info("host %s: %s %s is there, verified", self.host_name, image.name, image.manifest.version)
        return paths

    def _holds(self, conn: libvirt.virConnect, vol: libvirt.virStorageVol, artifact: dict, recorded: bool) -> bool:
        """Whether VOL holds ARTIFACT: recorded as verified, if its size is right (a copy cut
        short is smaller); not recorded, if what reads back from the host matches."""
        if self._size(vol) != artifact["size"]:
            return False
        return recorded or self._digest(conn, vol) == _hex(artifact["sha256"])

    def _copy(self, conn: libvirt.virConnect, pool: libvirt.virStoragePool, name: str, source: Path,
              artifact: dict, what: str) -> libvirt.virStorageVol:
        """A new volume NAME with the local file SOURCE's bytes, read back and checked
        against the manifest; deleted again (LaunchError) if they differ."""
        try:
            # empty, raw: the host's libvirt never interprets what it holds, and an upload
            # cut short leaves it shorter than the artifact
            vol = pool.createXML(volume_xml(name, 0, "raw", IMAGE_MODE), 0)
        except libvirt.libvirtError as e:
            if _code(e) == libvirt.VIR_ERR_STORAGE_VOL_EXIST:
                raise LaunchError(f"{what} is being copied to the host {self.host_name} by another process; "
                                  "launch again once it is there") from None
            raise
        try:
            self._send(conn, vol, source, artifact["size"])
            held = self._digest(conn, vol)
        except BaseException:
            self._delete(vol)
            raise
        if held != _hex(artifact["sha256"]):
            self._delete(vol)
            raise LaunchError(f"{what} did not arrive intact on the host {self.host_name} "
                              f"(sha256 {held} read back, {_hex(artifact['sha256'])} expected)")
        return vol

    # -- instances ---------------------------------------------------------------------------

    def create(self, instance_id: str, image: ImageBuild, disk_gib: int, seed: Seed, undo,
               faults=None) -> HostPaths:
        try:
            conn = self.host.conn()
            images = self.ensure_image(conn, image)
            pool = self._pool(conn, self.instances_pool)
            if faults:
                faults.point("launch.directory")
            size = max(disk_gib << 30, image.manifest.artifacts["disk"].get("virtual_size", 0))
            disk = self._new(pool, "disk", instance_id, undo,
                             volume_xml(self._name(instance_id, "disk"), size, "qcow2", PRIVATE_MODE,
                                        backing=images["disk"]))
            if faults:
                faults.point("launch.disk")
            seed_vol = self._new(pool, "seed", instance_id, undo,
                                 volume_xml(self._name(instance_id, "seed"), 0, "raw", PRIVATE_MODE))
            with tempfile.TemporaryDirectory(prefix="computed-seed-") as tmp:
                iso = cloudinit.write_seed(Path(tmp) / "seed.iso", seed.meta_data, seed.user_data,
                                           vendor_data=seed.vendor_data)
                self._send(conn, seed_vol, iso, iso.stat().st_size)
            console = self._new(pool, "console", instance_id, undo,
                                volume_xml(self._name(instance_id, "console"), 0, "raw", PRIVATE_MODE))
            return HostPaths(kernel=images["kernel"], initrd=images["initrd"], disk=disk.path(),
                             seed=seed_vol.path(), console=console.path())
        except libvirt.libvirtError as e:
            raise LaunchError(f"preparing the instance's storage on the host {self.host_name} failed: "
                              f"{e.get_error_message()}") from None

    @staticmethod
    def _name(instance_id: str, role: str) -> str:
        return f"{instance_id}-{INSTANCE_VOLUMES[role]}"

    def _new(self, pool: libvirt.virStoragePool, role: str, instance_id: str, undo, xml: str) -> libvirt.virStorageVol:
        vol = pool.createXML(xml, 0)
        undo.push(f"instance {role} volume", lambda: self._delete(vol))
        return vol

    def remove(self, instance_id: str) -> None:
        with self._reaching("removing the files of " + instance_id) as conn:
            pool = self._pool(conn, self.instances_pool, make=False)
            if pool is None:
                return
            self._refresh(pool)
            for name in pool.listVolumes():
                if (m := INSTANCE_VOLUME.fullmatch(name)) and m.group(1) == instance_id:
                    vol = self._volume(pool, name)
                    if vol is not None:
                        self._delete(vol)

    def instance_ids(self) -> set[str]:
        with self._reaching("listing the instances' files") as conn:
            pool = self._pool(conn, self.instances_pool, make=False)
            if pool is None:
                return set()
            self._refresh(pool)
            return {m.group(1) for name in pool.listVolumes() if (m := INSTANCE_VOLUME.fullmatch(name))}

    def console(self, instance_id: str, limit: int) -> str:
        with self._reaching("reading the console of " + instance_id) as conn:
            pool = self._pool(conn, self.instances_pool, make=False)
            if pool is None:
                return ""
            name = self._name(instance_id, "console")
            data = self._tail(conn, self._volume(pool, name), limit)
            if len(data) < limit:  # the rest in the file virtlogd last rotated to, listed once re-read
                self._refresh(pool)
                data = self._tail(conn, self._volume(pool, name + ".0"), limit - len(data)) + data
            return data.decode("utf-8", "replace")

    def _tail(self, conn: libvirt.virConnect, vol: libvirt.virStorageVol | None, limit: int) -> bytes:
        size = self._size(vol) if vol is not None else None
        if not size:  # gone, or empty (a length of 0 means "to the end" to libvirt)
            return b""
        return b"".join(self._chunks(conn, vol, max(0, size - limit), min(size, limit)))

    @contextmanager
    def _reaching(self, what: str) -> Iterator[libvirt.virConnect]:
        """The host's connection; a libvirt error inside (the host went away mid-call)
        becomes ServiceUnavailable, as for any host that cannot be reached."""
        conn = self.host.conn()
        try:
            yield conn
        except libvirt.libvirtError as e:
            raise ServiceUnavailable(f"{what} on the host {self.host_name} failed: {e.get_error_message()}") from None


def _abort(stream: libvirt.virStream) -> None:
    try:
        stream.abort()
    except libvirt.libvirtError:
        pass

