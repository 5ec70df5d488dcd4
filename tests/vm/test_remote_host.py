"""A host reached over SSH, in copy mode: the service's only enabled host is this machine's
libvirtd through an sshd the test starts on a loopback port (tests/vm/sshd.py), so every
libvirt call, the image's copy and each instance file go through libvirt's remote protocol
and its storage API, as for a host across the network. Launch through the REST API, ready
(SSH and the container engine), the image copied and verified once, SSH in with the user's
key and run the preloaded container, the console read back through libvirt, stop and start
(on the same host), terminate, and nothing of the instance left on the host."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import libvirt
import paramiko
import pytest
from sqlalchemy import select

from computed.virt import ssh
from computed.virt.libvirt.copy_storage import CopyStorage, image_volume_name, pool_names
from computed.store.models import HostImage, Instance
from computed.hosts.addresses import port_is_free
from images.manifest import sha256_file

from .service_harness import RunningService, domain_names
from .sshd import Sshd, SshdUnavailable

#: root's own known_hosts files (ssh's, libvirt's libssh transport's): the test writes neither
KNOWN_HOSTS = (Path.home() / ".ssh" / "known_hosts", Path.home() / ".config" / "libvirt" / "known_hosts")
PORTS = (43700, 43749)

libvirt.registerErrorHandler(lambda ctx, err: None, None)


@pytest.fixture(scope="module")
def sshd():
    try:
        server = Sshd()
    except SshdUnavailable as e:
        if os.environ.get("CI"):
            pytest.fail(f"{e} (CI is set: CI must run this test)", pytrace=False)
        pytest.skip(str(e))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def uploads():
    """The names of the volumes uploaded to a host in copy mode, in order (the service runs
    in this process)."""
    sent: list[str] = []
    original = CopyStorage._send

    def counting(self, conn, vol, source, size):
        sent.append(vol.name())
        return original(self, conn, vol, source, size)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(CopyStorage, "_send", counting)
        yield sent


@pytest.fixture(scope="module")
def storage_dir(qemu_tmp):
    path = qemu_tmp("remote-host-") / "storage"
    yield path
    # the host keeps its pools (and image copies) for the next launch; the test's go
    conn = libvirt.open("qemu:///system")
    try:
        for name in pool_names(path):
            try:
                pool = conn.storagePoolLookupByName(name)
            except libvirt.libvirtError:
                continue
            if pool.isActive():
                pool.destroy()
            pool.undefine()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def svc(built_image, settings, qemu_tmp, sshd, storage_dir, uploads):
    built_image(settings.default_image)
    running = RunningService(qemu_tmp("remote-service-"), settings.image_library, PORTS, domain_type="qemu")
    try:
        hosts = running.service.hosts
        added = hosts.add("remote", sshd.libvirt_uri(), image_mode="copy", storage_dir=str(storage_dir))
        assert added.host.reachable and added.host.vcpus and added.host.address == "127.0.0.1"
        hosts.set_enabled("local", False)  # the scheduler has no choice but the remote host
        yield running
        # a failed test leaves no guest running on the host
        for inst in running.call("GET", "/v1/instances")["instances"]:
            if inst["state"]["name"] != "terminated":
                running.call("DELETE", f"/v1/instances/{inst['id']}", expect=(202, 409, 503))
        running.service.worker.idle(120)
    finally:
        running.close()


def login(inst: dict, key) -> paramiko.SSHClient:
    return ssh.wait_for_login(inst["ssh"]["host"], inst["ssh"]["port"], inst["ssh"]["user"], key,
                              time.monotonic() + 300)  # a loaded machine slows a TCG guest a lot


def run(client: paramiko.SSHClient, command: str) -> str:
    rc, out, err = ssh.run(client, command, timeout=300)
    assert rc == 0, f"{command!r}: exit {rc}: {err or out}"
    return out


def placed_on(svc: RunningService, instance_id: str) -> str:
    with svc.service.db.reading() as s:
        return s.get(Instance, instance_id).host


def pool_files(storage_dir: Path, which: int) -> set[str]:
    """The volumes of the test's images (0) or instances (1) pool, as the host's libvirt lists them."""
    conn = libvirt.open("qemu:///system")
    try:
        pool = conn.storagePoolLookupByName(pool_names(storage_dir)[which])
        pool.refresh(0)
        return set(pool.listVolumes())
    finally:
        conn.close()


def test_an_instance_on_a_host_reached_over_ssh(svc, sshd, storage_dir, uploads, settings):
    known_hosts_before = [p.read_bytes() if p.exists() else None for p in KNOWN_HOSTS]
    logins_before = sshd.logins()
    image = svc.service.images.get(settings.default_image)
    manifest = image.manifest
    created = svc.call("POST", "/v1/keypairs", json={"name": "remote"}, expect=201)
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(created["private_key"]))

    started = time.monotonic()
    [inst] = svc.call("POST", "/v1/instances", expect=202, json={"size": "t3.micro", "key_name": "remote"})["instances"]
    iid = inst["id"]
    svc.wait_state(iid, "running", timeout=300)  # the image copied, the domain defined and started
    running_after = time.monotonic() - started
    inst = svc.wait_ready(iid)
    ready_after = time.monotonic() - started
    assert placed_on(svc, iid) == "remote" and inst["placement"]["host"] == "remote"
    assert inst["ssh"]["host"] == "127.0.0.1" and PORTS[0] <= inst["ssh"]["port"] <= PORTS[1]
    assert sshd.logins() > logins_before  # the service did go through the test's sshd

    # the image: copied once (disk, kernel, initrd), verified, recorded for the host
    wanted = {role: image_volume_name(role, manifest.artifacts[role]) for role in ("disk", "kernel", "initrd")}
    assert sorted(n for n in uploads if not n.startswith(iid)) == sorted(wanted.values())
    assert pool_files(storage_dir, 0) == set(wanted.values())
    assert sha256_file(storage_dir / "images" / wanted["disk"]) == manifest.artifacts["disk"]["sha256"]
    with svc.service.db.reading() as s:
        rows = [(r.host, r.disk_sha256, r.image, r.image_version) for r in s.scalars(select(HostImage))]
    assert rows == [("remote", manifest.artifacts["disk"]["sha256"], manifest.name, manifest.version)]
    assert pool_files(storage_dir, 1) == {f"{iid}-disk.qcow2", f"{iid}-seed.iso", f"{iid}-console.log"}

    # the user's key, through the instance's SSH endpoint on the host; the baked-in container
    client = login(inst, key)
    try:
        assert run(client, "cloud-init status --wait >/dev/null; hostname").strip() == iid  # its own seed
        assert run(client, f"podman run --rm {manifest.container_image} echo hello") == "hello\n"
        run(client, f"echo {iid} > marker && sync")
    finally:
        client.close()
    uploaded = list(uploads)
    console = svc.call("GET", f"/v1/instances/{iid}/console")["output"]
    assert "cloud-init" in console  # QEMU appended to the console volume; read back over libvirt

    svc.call("POST", f"/v1/instances/{iid}/stop", expect=202)
    svc.wait_state(iid, "stopped")
    svc.call("POST", f"/v1/instances/{iid}/start", expect=202)
    inst = svc.wait_ready(iid)
    assert placed_on(svc, iid) == "remote" and inst["placement"]["host"] == "remote"
    client = login(inst, key)
    try:
        assert run(client, "cat marker").strip() == iid  # the same disk
    finally:
        client.close()
    assert uploads == uploaded  # a start makes nothing anew

    svc.call("DELETE", f"/v1/instances/{iid}", expect=202)
    final = svc.wait_state(iid, "terminated")
    assert final["ssh"]["port"] is None
    assert f"computed-{iid}" not in domain_names()
    assert not any(name.startswith(iid) for name in pool_files(storage_dir, 1))
    assert not any(p.name.startswith(iid) for p in (storage_dir / "instances").iterdir())
    assert port_is_free("127.0.0.1", inst["ssh"]["port"])
    assert pool_files(storage_dir, 0) == set(wanted.values())  # the image stays for the next launch
    assert [p.read_bytes() if p.exists() else None for p in KNOWN_HOSTS] == known_hosts_before
    print(f"remote host: running {running_after:.0f}s (the image's copy included) and ready {ready_after:.0f}s "
          f"after the launch request")
