"""Boot each shipped image the way a user would meet it: a NoCloud seed with a fresh SSH key
and user data, SSH in with paramiko as the default user, check what cloud-init did, run the
preloaded container offline, power off. One guest per image, shared by its tests."""

from __future__ import annotations

import subprocess
import textwrap
import time
from dataclasses import dataclass

import paramiko
import pytest

from computed.virt import cloudinit, ssh
from images.qemu import QemuGuest
from images.library import ImageBuild

BOOT_TIMEOUT = 300

PODMAN_USER_DATA = textwrap.dedent("""\
    #cloud-config
    ssh_authorized_keys:
      - {key}
    write_files:
      - path: /etc/computed-test/greeting
        content: "hello from write_files <&> 'quoted'\\n"
        permissions: "0644"
    runcmd:
      - [sh, -c, "id -un > /var/tmp/runcmd-ran"]
    """)

# A plain shell script, the most common EC2 user data.
DOCKER_USER_DATA = textwrap.dedent("""\
    #!/bin/sh
    mkdir -p /etc/computed-test
    printf '%s\\n' "hello from write_files <&> 'quoted'" > /etc/computed-test/greeting
    echo "script ran as $(id -un)" > /var/tmp/script-ran
    """)


@dataclass
class Booted:
    image: ImageBuild
    guest: QemuGuest
    client: paramiko.SSHClient
    policy: ssh.RecordingPolicy
    keypair: ssh.KeyPair
    login_seconds: float

    def run(self, command: str, timeout: float = 300) -> str:
        rc, out, err = ssh.run(self.client, command, timeout=timeout)
        assert rc == 0, f"{command!r} exited {rc}: {err or out}"
        return out


@pytest.fixture(scope="module", params=["debian-12-podman", "debian-12-docker"])
def booted(request, built_image, tmp_path_factory):
    image = built_image(request.param)
    workdir = tmp_path_factory.mktemp(request.param)
    keypair = ssh.generate_keypair("computed-test")
    if image.manifest.container_engine["name"] == "podman":
        # keys only in user data: the early key step must read #cloud-config
        meta = cloudinit.meta_data("i-0123456789abcdef0", "node-podman")
        user_data = PODMAN_USER_DATA.format(key=keypair.public_openssh)
    else:
        # keys in meta-data, user data a #! script
        meta = cloudinit.meta_data("i-0fedcba9876543210", "node-docker", [keypair.public_openssh])
        user_data = DOCKER_USER_DATA
    seed = cloudinit.write_seed(workdir / "seed.iso", meta, user_data)
    guest = QemuGuest(image, workdir, seed, vcpus=2, memory_mib=1024, name=request.param).start()
    policy = ssh.RecordingPolicy()
    try:
        client = ssh.wait_for_login("127.0.0.1", guest.ssh_port, image.manifest.default_user, keypair.pkey(),
                                    time.monotonic() + BOOT_TIMEOUT)
    except ssh.SSHTimeout:
        guest.kill()
        pytest.fail(f"no SSH login within {BOOT_TIMEOUT}s; console:\n{guest.console()[-4000:]}")
    client.close()
    client = ssh.connect("127.0.0.1", guest.ssh_port, image.manifest.default_user, keypair.pkey(), policy=policy)
    login = time.monotonic() - guest.started_at
    print(f"\n{request.param}: SSH login {login:.1f}s after QEMU started")
    booted = Booted(image, guest, client, policy, keypair, login)
    yield booted
    client.close()
    guest.kill()


def test_cloud_init_ran_user_data(booted):
    status = booted.run("cloud-init status --wait --long")
    assert "status: done" in status, status
    assert booted.run("cat /etc/computed-test/greeting") == "hello from write_files <&> 'quoted'\n"
    if booted.image.manifest.container_engine["name"] == "podman":
        assert booted.run("cat /var/tmp/runcmd-ran").strip() == "root"
    else:
        assert booted.run("cat /var/tmp/script-ran").strip() == "script ran as root"


def test_logged_in_as_default_user_with_sudo(booted):
    assert booted.run("id -un").strip() == booted.image.manifest.default_user
    assert booted.run("sudo -n id -u").strip() == "0"
    hostname = booted.run("cloud-init status --wait >/dev/null; hostname").strip()
    assert hostname in ("node-podman", "node-docker")


def test_sshd_refuses_root_and_passwords(booted):
    config = booted.run("sudo -n sshd -T")
    assert "permitrootlogin no" in config
    assert "passwordauthentication no" in config
    assert "kbdinteractiveauthentication no" in config
    with pytest.raises(paramiko.AuthenticationException):
        ssh.connect("127.0.0.1", booted.guest.ssh_port, "root", booted.keypair.pkey()).close()
    transport = paramiko.Transport(("127.0.0.1", booted.guest.ssh_port))
    try:
        transport.start_client(timeout=30)
        with pytest.raises(paramiko.BadAuthenticationType) as refused:
            transport.auth_password(booted.image.manifest.default_user, "password")
        assert "password" not in refused.value.allowed_types
    finally:
        transport.close()


def test_sshd_is_not_restarted_under_users(booted):
    """cloud-init runs after sshd; nothing it does may restart sshd and drop sessions."""
    booted.run("cloud-init status --wait")
    starts = booted.run("sudo -n journalctl -b -u ssh.service -o cat | grep -c 'Server listening on 0.0.0.0'")
    assert starts.strip() == "1"


def test_host_key_is_this_instances_own_ed25519(booted):
    seen = booted.policy.seen[f"[127.0.0.1]:{booted.guest.ssh_port}"]
    assert seen.get_name() == "ssh-ed25519"
    on_guest = booted.run("cat /etc/ssh/ssh_host_ed25519_key.pub").split()[1]
    assert seen.get_base64() == on_guest


def test_base_disk_holds_no_instance_identity(booted, tmp_path):
    """Host keys and machine-id are made at first boot, so every instance has its own."""
    raw = tmp_path / "base.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(booted.image.artifact_path("disk")), str(raw)],
                   check=True)
    listing = subprocess.run(["debugfs", "-R", "ls -l /etc/ssh", str(raw)], capture_output=True, text=True,
                             check=True).stdout
    assert "sshd_config" in listing
    assert "ssh_host_" not in listing
    machine_id = subprocess.run(["debugfs", "-R", "cat /etc/machine-id", str(raw)], capture_output=True,
                                text=True, check=True).stdout
    assert machine_id.strip() == ""
    assert len(booted.run("cat /etc/machine-id").strip()) == 32


def test_preloaded_container_runs_offline(booted):
    manifest = booted.image.manifest
    engine, reference = manifest.container_engine["name"], manifest.container_image
    assert booted.run(f"{engine} run --rm {reference} echo hello") == "hello\n"
    assert booted.run(f"sudo -n {engine} run --rm {reference} echo hello") == "hello\n"


def test_console_shows_the_guests_address(booted):
    """The login prompt on the serial console names the address the guest got by DHCP
    (agetty prints it again when it changes): the console output tells a guest that never
    got one from one whose SSH is down. The address is the one the guest itself reports on
    its default route's interface: a container engine adds bridges of its own (docker0,
    podman0), later in interface order, which agetty's \\4 passes over."""
    device = _default_route_device(booted)
    [address] = booted.run(f"ip -4 -o addr show dev {device} scope global | awk '{{print $4}}' | cut -d/ -f1").split()
    prompt = f"IPv4 {address} "
    deadline = time.monotonic() + 60
    while prompt not in booted.guest.console() and time.monotonic() < deadline:
        time.sleep(1)
    assert prompt in booted.guest.console(), booted.guest.console()[-2000:]


def test_the_nic_is_named_before_networkd_starts(booted):
    """udev in the initramfs names the NIC (ens2), so systemd-networkd never sees it renamed
    under it: a rename while it runs sometimes made systemd 252 configure the link twice and
    fail it ("Failed to configure DHCPv4 client: Device or resource busy"), a boot with no
    IPv4 address, about 1 in 30 boots, unreachable over SSH."""
    networkd = booted.run("sudo -n journalctl -b -u systemd-networkd -o cat")
    assert "ens2: Configuring with /etc/systemd/network/20-computed-wired.network" in networkd, networkd
    assert "name change detected" not in networkd, networkd
    renamed = booted.run("sudo -n journalctl -b -k -o cat --grep 'renamed from eth0' || true")
    assert "ens2: renamed from eth0" in renamed  # the kernel's own record: the rename still happens
    assert _default_route_device(booted) == "ens2"
    assert _networkd_setup(booted)["ens2"] in ("configured", "configuring")  # never "failed"


def test_networkd_leaves_the_container_engines_links_alone(booted):
    """Only the physical NIC is networkd's: a container's veth and the engine's bridge are the
    engine's. Matched as well (Type=ether alone matches a veth), networkd brought docker's
    veths up and ran DHCP on them, and failed them when docker moved or removed them."""
    engine, reference = booted.image.manifest.container_engine["name"], booted.image.manifest.container_image
    name = f"netcheck-{engine}"
    booted.run(f"sudo -n {engine} run -d --name {name} {reference} sleep 600")
    try:
        setup = _networkd_setup(booted)
    finally:
        booted.run(f"sudo -n {engine} rm -f {name}")
    veths = [link for link in setup if link.startswith("veth")]
    assert veths, setup  # the container is attached to the engine's bridge by a veth
    assert {state for link, state in setup.items() if link != "ens2"} == {"unmanaged"}, setup
    networkd = booted.run("sudo -n journalctl -b -u systemd-networkd -o cat")
    assert [line for line in networkd.splitlines() if "Configuring with" in line] == \
        ["ens2: Configuring with /etc/systemd/network/20-computed-wired.network."], networkd
    assert "Failed" not in networkd, networkd


def _networkd_setup(booted) -> dict[str, str]:
    """Each link networkd knows, with its SETUP state (configured, unmanaged, failed, ...)."""
    rows = [row.split() for row in booted.run("networkctl list --no-legend --no-pager").splitlines()]
    return {cols[1]: cols[-1] for cols in rows if cols}


def _default_route_device(booted) -> str:
    return booted.run("ip -o route show default | awk '{print $5}'").strip()


def test_a_users_units_and_containers_get_ten_seconds_to_stop(booted):
    """A container's PID 1 ignores SIGTERM unless it handles it: a rootless one started by
    hand held every shutdown up for systemd's 90 s. The user's manager gives 10 s, as
    `podman stop` does; units that set their own timeout keep it."""
    assert booted.run("systemctl --user show --property=DefaultTimeoutStopUSec --value") == "10s\n"
    assert booted.run("systemctl show --property=DefaultTimeoutStopUSec --value") == "1min 30s\n"  # system's: Debian's


def test_powers_off(booted):
    """With a container running that ignores SIGTERM (sleep as its PID 1)."""
    manifest = booted.image.manifest
    engine, reference = manifest.container_engine["name"], manifest.container_image
    booted.run(f"{engine} run -d --name stubborn {reference} sleep 600")
    ssh.run(booted.client, "sudo -n systemctl poweroff", timeout=30)
    assert booted.guest.wait(120), "the guest did not power off within 120 s"
