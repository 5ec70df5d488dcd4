"""CopyStorage (computed/copy_storage.py) against the real libvirtd (qemu:///system): pools
made and reused, an image copied once and verified by reading it back, a copy that differs
caught, volumes left by an interrupted copy not trusted, instance volumes with the image's
disk as backing file, console tails, removal. Nothing boots (tests/vm/test_remote_host.py
boots a guest from such a copy, over SSH).

Needs libvirtd: skipped where it cannot be reached, a failure in CI (scripts/test starts it)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import libvirt
import pytest
from sqlalchemy import select

from computed.virt import cloudinit
from computed.virt.libvirt.copy_storage import CopyStorage, image_volume_name, pool_names
from computed.store.engine import Database
from computed.hosts.registry import HostFacts
from computed.virt.libvirt.connection import LibvirtDriver
from computed.store.models import Host, HostImage
from computed.virt.errors import LaunchError
from computed.virt.storage import Seed, for_host
from images.library import ImageLibrary
from tests import libvirtd_lock
from tests.fakes import publish_with_disk

URI = "qemu:///system"
HOST = "copy-host"
IDS = ("i-0000000000000000a", "i-0000000000000000b", "i-0000000000000000c")

libvirt.registerErrorHandler(lambda ctx, err: None, None)


@pytest.fixture(scope="module")
def libvirtd():
    """A connection to the system libvirtd; the module is skipped without one (failed in CI).
    The VM part of the suite does not stop libvirtd meanwhile (tests/libvirtd_lock.py)."""
    with libvirtd_lock.shared():
        try:
            conn = libvirt.open(URI)
        except libvirt.libvirtError as e:
            message = f"libvirtd ({URI}) cannot be reached: {e.get_error_message()} (scripts/test starts it)"
            if os.environ.get("CI"):
                pytest.fail(message + "; CI is set: CI must run these tests", pytrace=False)
            pytest.skip(message)
        yield conn
        conn.close()


@pytest.fixture
def storage_dir(libvirtd):
    """A storage_dir under a directory QEMU's user could enter (pytest's are 0700); the
    test's pools are destroyed and undefined afterwards, whatever the test left."""
    root = Path(tempfile.mkdtemp(prefix="computed-copy-storage-"))
    root.chmod(0o755)
    path = root / "host" / "storage"
    yield path
    for name in pool_names(path):
        try:
            pool = libvirtd.storagePoolLookupByName(name)
        except libvirt.libvirtError:
            continue
        if pool.isActive():
            pool.destroy()
        pool.undefine()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def db(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'c.db'}")
    with db.session() as s:
        s.add(Host(name=HOST, uri=URI, address="127.0.0.1", enabled=True, image_mode="copy",
                   storage_dir="/unused", reachable=True, created_at=dt.datetime.now(dt.UTC)))
    yield db
    db.dispose()


@pytest.fixture
def image(tmp_path):
    """A fake build with a real 64 MiB qcow2 disk (and small fake kernel and initrd)."""
    return publish_with_disk(ImageLibrary(tmp_path / "images"), "copy-test-image")


@pytest.fixture
def host():
    conn = LibvirtDriver(URI)
    yield conn
    conn.close()


@pytest.fixture
def make_storage(host, storage_dir, db):
    """make_storage() -> a new CopyStorage for the test's host (as the provisioner makes one
    per call)."""
    return lambda: CopyStorage(host, HOST, storage_dir, db)


@pytest.fixture
def uploads(monkeypatch):
    """Volume names, in the order uploads into them began."""
    sent: list[str] = []
    original = CopyStorage._send

    def counting(self, conn, vol, source, size):
        sent.append(vol.name())
        return original(self, conn, vol, source, size)

    monkeypatch.setattr(CopyStorage, "_send", counting)
    return sent


class Undo:
    def __init__(self):
        self.steps = []

    def push(self, what, fn):
        self.steps.append((what, fn))

    def run(self):
        for _, fn in reversed(self.steps):
            fn()


def seed(instance_id: str, user_data: bytes = b"#cloud-config\n") -> Seed:
    return Seed(cloudinit.meta_data(instance_id, instance_id, ["ssh-ed25519 AAAA test"]), user_data)


def launch(storage: CopyStorage, image, instance_id: str, disk_gib: int = 1):
    undo = Undo()
    return storage.create(instance_id, image, disk_gib, seed(instance_id), undo), undo


def image_volumes(image) -> dict[str, str]:
    return {role: image_volume_name(role, image.manifest.artifacts[role]) for role in ("disk", "kernel", "initrd")}


def volumes(conn, pool_name: str) -> set[str]:
    pool = conn.storagePoolLookupByName(pool_name)
    pool.refresh(0)
    return set(pool.listVolumes())


def sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def host_images(db) -> list[tuple[str, str, str, str]]:
    with db.reading() as s:
        return [(r.host, r.disk_sha256, r.image, r.image_version) for r in s.scalars(select(HostImage))]


def test_an_image_is_copied_once_verified_and_recorded(libvirtd, make_storage, image, db, uploads, storage_dir):
    paths, _ = launch(make_storage(), image, IDS[0])
    wanted = image_volumes(image)
    assert sorted(n for n in uploads if n in wanted.values()) == sorted(wanted.values())
    held = {"disk": str(storage_dir / "images" / wanted["disk"]), "kernel": paths.kernel, "initrd": paths.initrd}
    for role, path in held.items():
        assert Path(path).name == wanted[role]
        assert sha256(path) == image.manifest.artifacts[role]["sha256"]
    assert host_images(db) == [(HOST, image.manifest.artifacts["disk"]["sha256"], image.name, image.manifest.version)]
    images_pool, instances_pool = pool_names(storage_dir)
    uuids = {name: libvirtd.storagePoolLookupByName(name).UUIDString() for name in (images_pool, instances_pool)}

    before = len(uploads)
    launch(make_storage(), image, IDS[1])  # another CopyStorage, as each provisioner call makes
    assert uploads[before:] == [f"{IDS[1]}-seed.iso"]  # the instance's seed, no image file again
    assert volumes(libvirtd, images_pool) == set(wanted.values())
    for name, uuid in uuids.items():
        pool = libvirtd.storagePoolLookupByName(name)
        assert pool.UUIDString() == uuid  # the same pool, not one defined again
        assert pool.isActive() and pool.isPersistent() and pool.autostart()


def test_instance_volumes_layer_on_the_copied_disk(libvirtd, make_storage, image, storage_dir):
    paths, undo = launch(make_storage(), image, IDS[0], disk_gib=2)
    assert [what for what, _ in undo.steps] == ["instance disk volume", "instance seed volume",
                                                "instance console volume"]
    assert Path(paths.disk).parent == Path(paths.seed).parent == Path(paths.console).parent == storage_dir / "instances"
    info = subprocess.run(["qemu-img", "info", "--backing-chain", "--output=json", paths.disk],
                          capture_output=True, text=True, check=True)
    top, base = json.loads(info.stdout)
    assert top["format"] == "qcow2" and top["virtual-size"] == 2 << 30
    assert top["full-backing-filename"] == str(storage_dir / "images" / image_volumes(image)["disk"])
    assert top["backing-filename-format"] == "qcow2"
    assert base["format"] == "qcow2" and base["virtual-size"] == 64 << 20

    # the image's size wins when the size asked for is smaller
    small, _ = launch(make_storage(), image, IDS[1], disk_gib=0)
    info = subprocess.run(["qemu-img", "info", "--output=json", small.disk], capture_output=True, text=True, check=True)
    assert json.loads(info.stdout)["virtual-size"] == 64 << 20

    iso = Path(paths.seed).read_bytes()
    assert b"CIDATA" in iso.upper() and IDS[0].encode() in iso and b"ssh-ed25519 AAAA test" in iso
    assert Path(paths.console).stat().st_size == 0
    # QEMU's user reaches the files (the DAC driver hands it the instance's own while it runs)
    assert stat.S_IMODE((storage_dir / "images").stat().st_mode) == 0o755
    assert stat.S_IMODE((storage_dir / "instances").stat().st_mode) == 0o711  # nobody else lists it
    for path in (paths.kernel, paths.initrd, str(storage_dir / "images" / image_volumes(image)["disk"])):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    for path in (paths.disk, paths.seed, paths.console):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # the user data may hold secrets

    undo.run()
    _, instances_pool = pool_names(storage_dir)
    assert volumes(libvirtd, instances_pool) == {f"{IDS[1]}-disk.qcow2", f"{IDS[1]}-seed.iso", f"{IDS[1]}-console.log"}


def test_a_copy_that_differs_is_deleted_and_fails_the_launch(libvirtd, make_storage, image, db, storage_dir,
                                                               monkeypatch, tmp_path):
    original = CopyStorage._send
    disk_volume = image_volumes(image)["disk"]

    def corrupting(self, conn, vol, source, size):
        if vol.name() == disk_volume:  # one byte flipped on the way: the host holds something else
            data = bytearray(source.read_bytes())
            data[len(data) // 2] ^= 0xFF
            source = tmp_path / "altered"
            source.write_bytes(data)
        return original(self, conn, vol, source, size)

    monkeypatch.setattr(CopyStorage, "_send", corrupting)
    undo = Undo()
    with pytest.raises(LaunchError, match="did not arrive intact"):
        make_storage().create(IDS[0], image, 1, seed(IDS[0]), undo)
    images_pool, instances_pool = pool_names(storage_dir)
    assert disk_volume not in volumes(libvirtd, images_pool)
    assert not (storage_dir / "images" / disk_volume).exists()
    assert host_images(db) == [] and undo.steps == []

    monkeypatch.setattr(CopyStorage, "_send", original)
    paths, _ = launch(make_storage(), image, IDS[0])
    assert sha256(str(storage_dir / "images" / disk_volume)) == image.manifest.artifacts["disk"]["sha256"]
    assert len(host_images(db)) == 1


def test_a_volume_without_its_record_is_checked_before_use(libvirtd, make_storage, image, db, uploads, storage_dir):
    """As a process killed mid-copy leaves it: a volume by the right name, not recorded."""
    storage = make_storage()
    launch(storage, image, IDS[0])
    wanted = image_volumes(image)
    with db.session() as s:
        s.query(HostImage).delete()
    disk = storage_dir / "images" / wanted["disk"]
    data = disk.read_bytes()
    disk.write_bytes(data[: len(data) // 3])  # a third of it, as an interrupted upload
    uploads.clear()

    launch(make_storage(), image, IDS[1])
    assert uploads == [wanted["disk"], f"{IDS[1]}-seed.iso"]  # kernel and initrd read back, found intact
    assert disk.read_bytes() == data
    assert len(host_images(db)) == 1


def test_a_recorded_volume_cut_short_is_copied_again(libvirtd, make_storage, image, db, uploads, storage_dir):
    """The record says verified, but the volume is shorter (a copy again after the volume
    went missing, killed midway): its size gives it away without reading it back."""
    launch(make_storage(), image, IDS[0])
    kernel = storage_dir / "images" / image_volumes(image)["kernel"]
    kernel.write_bytes(kernel.read_bytes()[:-1])
    volumes(libvirtd, pool_names(storage_dir)[0])  # refreshed now: libvirt goes on listing what is unlinked next
    (storage_dir / "images" / image_volumes(image)["initrd"]).unlink()  # and one gone altogether
    uploads.clear()

    paths, _ = launch(make_storage(), image, IDS[1])
    assert sorted(uploads) == sorted([image_volumes(image)["kernel"], image_volumes(image)["initrd"],
                                      f"{IDS[1]}-seed.iso"])
    assert sha256(paths.kernel) == image.manifest.artifacts["kernel"]["sha256"]
    assert sha256(paths.initrd) == image.manifest.artifacts["initrd"]["sha256"]


def test_concurrent_launches_copy_the_image_once(libvirtd, make_storage, image, uploads, monkeypatch):
    counted = CopyStorage._send

    def slow(self, conn, vol, source, size):
        time.sleep(0.3)  # both launches are inside the copy at once
        return counted(self, conn, vol, source, size)

    monkeypatch.setattr(CopyStorage, "_send", slow)
    results, errors = {}, []

    def run(instance_id):
        try:
            results[instance_id] = launch(make_storage(), image, instance_id)[0]
        except Exception as e:  # reported below, with the others
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in IDS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [] and len(results) == 3
    for name in image_volumes(image).values():
        assert uploads.count(name) == 1, uploads


def test_console_tail_listing_and_removal(libvirtd, make_storage, image, storage_dir):
    storage = make_storage()
    a, _ = launch(storage, image, IDS[0])
    launch(storage, image, IDS[1])
    assert storage.console(IDS[0], 100) == ""
    with open(a.console, "ab") as f:  # as QEMU appends to it
        f.write(b"boot line one\n" + "caf\u00e9 ready\n".encode())
    assert storage.console(IDS[0], 10) == "f\u00e9 ready\n"  # the last 10 bytes
    assert storage.console(IDS[0], 8) == "\ufffd ready\n"  # a character cut in two is replaced
    assert storage.console(IDS[0], 4096) == "boot line one\ncaf\u00e9 ready\n"
    assert storage.console("i-00000000000000fff", 100) == ""
    # virtlogd rotated the log: the tail goes on into the older file
    Path(a.console).rename(a.console + ".0")
    Path(a.console).write_bytes(b"after rotation\n")
    assert storage.console(IDS[0], 4096) == "boot line one\ncaf\u00e9 ready\nafter rotation\n"
    assert storage.console(IDS[0], 22) == " ready\nafter rotation\n"
    assert storage.console(IDS[0], 6) == "ation\n"

    # a file there that is not one of an instance's volumes names no instance
    (storage_dir / "instances" / "notes.txt").write_text("x")
    assert make_storage().instance_ids() == {IDS[0], IDS[1]}
    storage.remove(IDS[0])
    assert not any(p.name.startswith(IDS[0]) for p in (storage_dir / "instances").iterdir())
    assert make_storage().instance_ids() == {IDS[1]}
    storage.remove(IDS[0])  # nothing left: no error
    storage.remove(IDS[1])
    assert storage.instance_ids() == set()
    _, instances_pool = pool_names(storage_dir)
    assert volumes(libvirtd, instances_pool) == {"notes.txt"}


def test_an_inactive_pool_is_started_and_a_missing_one_only_made_for_a_launch(libvirtd, make_storage, image,
                                                                              storage_dir):
    storage = make_storage()
    assert storage.instance_ids() == set() and storage.console(IDS[0], 10) == ""
    storage.remove(IDS[0])
    existing = {p.name() for p in libvirtd.listAllStoragePools()}
    assert not set(pool_names(storage_dir)) & existing  # listing or removing defines nothing

    launch(storage, image, IDS[0])
    for name in pool_names(storage_dir):
        libvirtd.storagePoolLookupByName(name).destroy()  # as after a host restart without autostart
    assert make_storage().instance_ids() == {IDS[0]}
    paths, _ = launch(make_storage(), image, IDS[1])
    assert Path(paths.disk).exists()
    for name in pool_names(storage_dir):
        assert libvirtd.storagePoolLookupByName(name).isActive()


def test_pools_are_named_after_the_storage_directory():
    a, b = pool_names(Path("/srv/computed")), pool_names(Path("/srv/computed-2"))
    assert a == pool_names(Path("/srv/computed/")) == pool_names(Path("/srv//computed"))
    assert a[0].startswith("computed-images-") and a[1].startswith("computed-instances-")
    assert len(set(a + b)) == 4


def test_a_copy_mode_host_gets_copy_storage(host, db, storage_dir):
    facts = HostFacts(HOST, URI, "127.0.0.1", "copy", str(storage_dir))
    storage = for_host(facts, host, Path("/unused"), db)
    assert isinstance(storage, CopyStorage) and storage.storage_dir == storage_dir and storage.host_name == HOST
