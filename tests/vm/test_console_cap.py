"""Issue 17, findings 5 and 6, on a real guest: QEMU opens the disk and seed the service
made private (the guest boots and runs its user data), none of its files is readable by
other users while it runs (libvirt's dynamic ownership hands them to QEMU's user, modes
kept), and a guest that floods its serial console leaves at most virtlogd's cap on the
host, while the console API still returns its latest output. One guest for all of it."""

from __future__ import annotations

import os
import stat
import time
import uuid

import paramiko
import pytest

from computed.virt import console_log, file_access, ssh

from .service_harness import RunningService

#: how much the guest writes to its serial port (COMPUTED_TEST_CONSOLE_FLOOD_BYTES
#: overrides it: 200000000 is the issue's figure). TCG's emulated 16550 moves about 0.1 MB/s
#: here (20 MB in 194 s), so 200 MB would be half an hour of CI. The cap plus two rotations'
#: worth (12 MiB with virtlogd's defaults, about two minutes) makes virtlogd rotate six
#: times and drop its oldest file twice: what keeps the files within the cap is shown at
#: work; any more is the same loop again.
FLOOD_BYTES = os.environ.get("COMPUTED_TEST_CONSOLE_FLOOD_BYTES")


@pytest.fixture(scope="module")
def svc(built_image, settings, qemu_tmp):
    built_image(settings.default_image)
    running = RunningService(qemu_tmp("console-"), settings.image_library, (43200, 43249), reconcile_interval=3600)
    yield running
    running.close()


@pytest.fixture(scope="module")
def guest(svc):
    created = svc.call("POST", "/v1/keypairs", json={"name": "console-cap"}, expect=201)
    key = paramiko.Ed25519Key.from_private_key(__import__("io").StringIO(created["private_key"]))
    inst = svc.call("POST", "/v1/instances", expect=202, json={
        "size": "t3.micro", "key_name": "console-cap",
        "user_data": "#cloud-config\nwrite_files:\n  - path: /var/tmp/seeded\n    content: \"read the seed\\n\"\n",
    })["instances"][0]
    inst = svc.wait_ssh(inst["id"])
    client = ssh.wait_for_login(inst["ssh"]["host"], inst["ssh"]["port"], inst["ssh"]["user"], key,
                                time.monotonic() + 120)
    yield inst, client
    client.close()
    svc.call("DELETE", f"/v1/instances/{inst['id']}", expect=202)
    svc.wait_state(inst["id"], "terminated")
    assert not svc.service.provisioner.files(inst["id"]).root.exists()  # rotated logs too


def run(client: paramiko.SSHClient, command: str, timeout: float = 120) -> str:
    rc, out, err = ssh.run(client, command, timeout=timeout)
    assert rc == 0, f"{command!r}: exit {rc}: {err or out}"
    return out


def console_files(svc: RunningService, instance_id: str) -> dict[str, int]:
    root = svc.service.provisioner.files(instance_id).root
    return {p.name: p.stat().st_size for p in root.iterdir() if p.name.startswith("console.log")}


def test_qemu_opens_the_private_disk_and_seed(svc, guest):
    inst, client = guest
    assert run(client, "cloud-init status --wait >/dev/null; cat /var/tmp/seeded") == "read the seed\n"
    files = svc.service.provisioner.files(inst["id"])
    qemu = file_access.qemu_user()
    for path in (files.root, files.disk, files.seed, *(files.root / n for n in console_files(svc, inst["id"]))):
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) & 0o007 == 0, f"{path}: {stat.filemode(st.st_mode)}"
        assert st.st_uid in (0, qemu.uid) and st.st_gid in (0, qemu.gid), path


def test_a_flooded_console_stays_within_the_cap(svc, guest):
    inst, client = guest
    max_size, max_backups = console_log.logd_cap()
    cap = max_size * (1 + max_backups)
    flood = int(FLOOD_BYTES) if FLOOD_BYTES else cap + 2 * max_size
    started = time.monotonic()
    run(client, f"head -c {flood} /dev/zero | tr '\\0' x | sudo tee /dev/ttyS0 >/dev/null", timeout=1800)
    elapsed = time.monotonic() - started
    print(f"wrote {flood} bytes to ttyS0 in {elapsed:.0f} s ({flood / elapsed / 1e6:.2f} MB/s)")
    marker = f"after-the-flood-{uuid.uuid4().hex}"
    run(client, f"echo {marker} | sudo tee /dev/ttyS0 >/dev/null")

    deadline = time.monotonic() + 60
    output = ""
    while marker not in output and time.monotonic() < deadline:
        output = svc.call("GET", f"/v1/instances/{inst['id']}/console")["output"]
        time.sleep(1)
    assert marker in output  # the latest output, across rotation
    assert marker in output[-4096:]
    sizes = console_files(svc, inst["id"])
    assert {"console.log.0", f"console.log.{max_backups - 1}"} <= set(sizes), sizes  # it did rotate
    assert sum(sizes.values()) <= cap, sizes
