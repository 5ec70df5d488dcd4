"""``computed exec`` / ``ssh`` check the instance's host key against the one the service
made for it, and write it to computed's known_hosts file: against the real API (libvirt's
test driver) with the instance's SSH endpoint pointed at a real OpenSSH server on loopback
(tests/vm/sshd.py), whose host key the store is told the instance has (or another)."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from computed.store.models import Instance
from computed.virt import ssh
from tests.cli_runner import run_cli
from tests.vm.sshd import Sshd, SshdUnavailable

from .test_cli_hosts import launch, server  # noqa: F401 - the served API, as there


@pytest.fixture(scope="module")
def sshd():
    try:
        running = Sshd()
    except SshdUnavailable as e:
        pytest.skip(str(e))
    yield running
    running.stop()


def point_at(service, instance_id: str, sshd, host_key: str) -> None:
    with service.db.session() as s:
        s.execute(update(Instance).where(Instance.id == instance_id)
                  .values(ssh_host="127.0.0.1", ssh_port=sshd.port, ssh_host_key=host_key))


def test_exec_checks_the_host_key_and_writes_known_hosts(server, sshd, tmp_path, monkeypatch):  # noqa: F811
    url, service, accounts = server
    monkeypatch.chdir(tmp_path)
    instance_id = launch(server, who="user")
    right = sshd.host_key.with_suffix(".pub").read_text().strip()
    point_at(service, instance_id, sshd, right)
    known_hosts = tmp_path / "known_hosts"
    # an earlier instance's line at the same port: replaced, not a "host key changed" warning
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {ssh.generate_keypair().public_openssh}\nother-host ssh-ed25519 AAAA\n")

    def run(*args):
        return run_cli(url, accounts["user"], tmp_path, *args)

    show = run("show", instance_id)
    assert show.exit_code == 0, show.output
    assert f"host key       256 {ssh.fingerprint(right)} (ED25519)\n" in show.stdout

    ok = run("exec", "-i", str(sshd.client_key), "-l", "root", instance_id, "--", "echo", "in")
    assert ok.exit_code == 0, ok.output
    assert ok.stdout == "in\n"
    key = " ".join(right.split()[:2])
    assert known_hosts.read_text().splitlines() == [
        "other-host ssh-ed25519 AAAA", f"{instance_id} {key}", f"[127.0.0.1]:{sshd.port} {key}"]

    # plain ssh takes the file: no prompt, no warning (BatchMode: it would fail rather than ask)
    import shutil
    import subprocess
    if shutil.which("ssh"):
        for alias in ([], ["-o", f"HostKeyAlias={instance_id}"]):
            plain = subprocess.run(["ssh", "-F", "none", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known_hosts}",
                                    "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null",
                                    *alias, "-i", str(sshd.client_key), "-p", str(sshd.port), "root@127.0.0.1",
                                    "echo plain"], capture_output=True, text=True, timeout=60)
            assert (plain.returncode, plain.stdout) == (0, "plain\n"), plain.stderr
            assert "WARNING" not in plain.stderr

    # another host key than the stored one: refused before any login
    logins = sshd.logins()
    other = ssh.generate_keypair()
    point_at(service, instance_id, sshd, other.public_openssh)
    refused = run("exec", "-i", str(sshd.client_key), "-l", "root", instance_id, "--", "echo", "in")
    assert refused.exit_code == 1 and refused.stdout == ""
    assert f"not {instance_id}'s own {other.fingerprint}: not connecting" in refused.stderr
    assert sshd.logins() == logins
