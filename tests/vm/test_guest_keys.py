"""One real guest, launched through the REST API, and the keys around it: the service's
management key does only its checks there (no shell, no command of its own, no pty, no
forwarding) while the user's key pair has the shell it always had; the guest's SSH host key
is the one the service made and stored; `computed exec` and plain ssh with the known_hosts
line the service gives connect with no prompt; after a rotation the running guest is still
checked with the key it has. (That a new guest gets the new key is checked on its seed, in
tests/unit/virt/test_management_key.py: a second boot would double this test's time.)"""

from __future__ import annotations

import io
import subprocess
import time
import types

import paramiko
import pytest

from computed.store.models import Instance
from computed.virt import ssh
from tests.cli_runner import run_cli

from .service_harness import RunningService


@pytest.fixture(scope="module")
def svc(built_image, settings, qemu_tmp):
    built_image(settings.default_image)
    running = RunningService(qemu_tmp("keys-"), settings.image_library, (44720, 44739))
    yield running
    running.close()


@pytest.fixture(scope="module")
def guest(svc, tmp_path_factory):
    """(the instance as the API shows it once ready, a directory with the user's key file)."""
    home = tmp_path_factory.mktemp("keys-home")
    created = svc.call("POST", "/v1/keypairs", json={"name": "keys-test"}, expect=201)
    key_file = home / "keys-test.pem"
    key_file.write_text(created["private_key"])
    key_file.chmod(0o600)
    launched = svc.call("POST", "/v1/instances", json={"size": "t3.micro", "key_name": "keys-test"}, expect=202)
    inst = svc.wait_ready(launched["instances"][0]["id"])
    yield inst, home
    svc.call("DELETE", f"/v1/instances/{inst['id']}", expect=202)
    svc.wait_state(inst["id"], "terminated")


def management_key_file(svc, inst: dict, home):
    with svc.service.db.reading() as s:
        row = s.get(Instance, inst["id"])
    key = svc.service.management_keys.of(row)
    path = home / "management.key"
    path.write_text(key.path.read_text())
    path.chmod(0o600)
    return key, path


def plain_ssh(inst: dict, home, key_file, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The ssh program with the known_hosts line the service gives: strict checking, no prompt.
    ARGS: options, then the remote command (or only options)."""
    known = home / "known_hosts.plain"
    known.write_text(inst["ssh"]["known_hosts"] + "\n")
    options = [a for a in args if a.startswith("-")]
    rest = [a for a in args if not a.startswith("-")]
    if "-W" in args:  # -W takes its value
        i = args.index("-W")
        options, rest = list(args[:i + 2]), list(args[i + 2:])
    command = ["ssh", "-F", "none", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
               "-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null",
               "-o", "IdentitiesOnly=yes", "-i", str(key_file), "-p", str(inst["ssh"]["port"]),
               *options, f"{inst['ssh']['user']}@{inst['ssh']['host']}", *rest]
    for _ in range(5):
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        # a connection QEMU's forward took while sshd did not answer: counted by the journal
        # check of test_the_users_key_has_its_shell_and_sudo, then tried again
        if not (done.returncode == 255 and "kex_exchange_identification" in done.stderr):
            return done
        CLOSED_AT_KEX.append(done.stderr)
        time.sleep(2)
    return done


CLOSED_AT_KEX: list[str] = []


def test_the_service_checked_the_guest_under_its_forced_command(guest):
    inst, _ = guest
    # ready: the service logged in (host key checked) and ran its engine check, as "engine"
    assert inst["ready"] == {"ssh": True, "container_engine": True}


def test_the_management_key_gets_only_the_checks(svc, guest):
    inst, home = guest
    key, path = management_key_file(svc, inst, home)
    assert key.restricted
    refused = plain_ssh(inst, home, path, "id")
    assert refused.returncode == 126 and refused.stdout == "", refused
    assert "only the checks ready, boot-id, engine" in refused.stderr
    assert "uid=" not in refused.stdout + refused.stderr
    for command in ("sudo -n id -u", "ready; id", "bash -i"):
        other = plain_ssh(inst, home, path, command)
        assert (other.returncode, other.stdout) == (126, ""), (command, other)
    shell = plain_ssh(inst, home, path, "-tt")  # a shell on a pty: neither (ssh -tt gives up: 255)
    assert shell.returncode in (126, 255) and shell.stdout == "", shell
    assert "PTY allocation request failed" in shell.stderr, shell
    no_pty = plain_ssh(inst, home, path, "-T")  # a shell without one: refused by the forced command
    assert (no_pty.returncode, no_pty.stdout) == (126, ""), no_pty
    assert plain_ssh(inst, home, path, "ready").stdout == "ready\n"
    # no forwarding: an ssh -W (direct-tcpip) to the guest's own sshd is refused
    forward = plain_ssh(inst, home, path, "-W", "127.0.0.1:22")
    assert forward.returncode != 0 and "SSH-2.0" not in forward.stdout, forward
    client = ssh.connect(inst["ssh"]["host"], inst["ssh"]["port"], inst["ssh"]["user"], key.pkey(),
                         host_key=inst["ssh"]["host_key"])
    try:
        with pytest.raises(paramiko.ChannelException):
            client.get_transport().open_channel("direct-tcpip", ("127.0.0.1", 22), ("127.0.0.1", 0))
        with pytest.raises(paramiko.SSHException):
            client.get_transport().open_session().get_pty()
    finally:
        client.close()


def test_the_users_key_has_its_shell_and_sudo(svc, guest):
    inst, home = guest
    user = plain_ssh(inst, home, home / "keys-test.pem", "id -un; sudo -n id -u")
    assert (user.returncode, user.stdout) == (0, f"{inst['ssh']['user']}\n0\n"), user
    assert "WARNING" not in user.stderr
    # sshd started once: nothing the seed's host key set off restarted it under the users
    journal = plain_ssh(inst, home, home / "keys-test.pem", "sudo -n journalctl -b -u ssh.service -o short-monotonic")
    assert journal.stdout.count("Server listening on 0.0.0.0") == 1, (journal.stdout, CLOSED_AT_KEX)


def test_the_guests_host_key_is_the_stored_one(svc, guest):
    inst, home = guest
    pkey = paramiko.Ed25519Key.from_private_key(io.StringIO((home / "keys-test.pem").read_text()))
    client = ssh.connect(inst["ssh"]["host"], inst["ssh"]["port"], inst["ssh"]["user"], pkey,
                         host_key=inst["ssh"]["host_key"])
    try:
        # cloud-init writes the .pub 0600 as well: read as root
        _, on_guest, _ = ssh.run(client, "sudo -n cat /etc/ssh/ssh_host_ed25519_key.pub")
        shown = client.get_transport().get_remote_server_key()
    finally:
        client.close()
    stored = inst["ssh"]["host_key"].split()[:2]
    assert on_guest.split()[:2] == stored
    assert [shown.get_name(), shown.get_base64()] == stored
    assert inst["ssh"]["host_key_fingerprints"] == [f"256 {ssh.fingerprint(inst['ssh']['host_key'])} (ED25519)"]


def test_computed_exec_connects_without_a_prompt(svc, guest):
    inst, home = guest
    key_id, secret = svc.auth
    creds = types.SimpleNamespace(access_key_id=key_id, secret_access_key=secret)
    result = run_cli(svc.url, creds, home, "exec", "-i", str(home / "keys-test.pem"), inst["id"], "--",
                     "sudo", "-n", "cat", "/etc/ssh/ssh_host_ed25519_key.pub")
    assert result.exit_code == 0, result.output
    assert result.stdout.split()[:2] == inst["ssh"]["host_key"].split()[:2]
    assert "trust" not in result.stderr and "host key" not in result.stderr
    lines = (home / "known_hosts").read_text().splitlines()
    key = " ".join(inst["ssh"]["host_key"].split()[:2])
    assert f"{inst['id']} {key}" in lines and inst["ssh"]["known_hosts"] in lines


def test_a_rotation_keeps_the_running_guest_checked(svc, guest):
    inst, home = guest
    keys = svc.service.management_keys
    with svc.service.db.reading() as s:
        row = s.get(Instance, inst["id"])
    before = keys.of(row)
    admin = svc.service.accounts.create("keys-admin", admin=True)
    rotated = run_cli(svc.url, admin, home, "host", "rotate-key", "local")
    assert rotated.exit_code == 0, rotated.output
    after = keys.current("local")
    assert after.id != before.id and rotated.stdout == f"{after.fingerprint}\n"
    assert f"{before.fingerprint} retired: still valid for 1 instance(s)" in rotated.stderr
    # the guest has the old key, which stays valid for it: the service still logs in with it
    deadline = time.monotonic() + 60
    boot = None
    while boot is None and time.monotonic() < deadline:
        boot = svc.service.provisioner.boot_id(row, timeout=20)
    assert boot is not None and len(boot.strip()) == 36
