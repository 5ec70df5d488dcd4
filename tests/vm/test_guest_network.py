"""What a real guest can reach, in both network modes (one booted guest each), dialling from
inside it (over SSH through its forwarded port) only the user-mode gateway (10.0.2.2,
fec0::2: the host's loopback) and addresses of a network namespace the test makes.

- Restricted (the default): the gateway reaches nothing of the host: not the API's port,
  not the instance's own SSH forward, not a listener the test opens on 127.0.0.1 and on
  ::1. SSH and forwarded ports (one asked for at launch, one added while it runs) still
  work from the host.
- Outbound (``guest_outbound``): the service installs its nftables table and the guest's
  QEMU runs as the user it matches; the guest reaches a listener in the test's namespace
  (IPv4 and IPv6), but not the gateway's loopback listeners, not the host's own address on
  the namespace's link, and not the namespace's second address, which the test puts in the
  forbidden ranges. The forbidden ranges are everything but the namespace's allowed range,
  so that nothing in the guest (its resolver, its clock) reaches any real address."""

from __future__ import annotations

import io
import ipaddress
import json
import pwd
import shlex
import socket
import subprocess
import time
from pathlib import Path

import paramiko
import pytest

from computed.virt import ssh
from computed.virt.guest_firewall import FAMILY, TABLE, GuestFirewall, qemu_user
from tests.netns import HostListener, TestNetwork

from .service_harness import RunningService, http_get

pytestmark = pytest.mark.timeout(1200)

#: each address and port the guest dials, and what it got: the first line the other end
#: sent ("connected: <line>"), or the error (a restricted network drops the SYN: a timeout)
PROBE = """
import socket, sys, threading
def probe(host, port):
    try:
        with socket.create_connection((host, int(port)), timeout=6) as s:
            s.settimeout(3)
            try:
                line = s.makefile().readline().strip()
            except OSError:
                line = ""
            result = "connected: " + line
    except OSError as e:
        result = "error: " + repr(e)
    print(host, port, result, flush=True)
targets = [t.rsplit(":", 1) for t in sys.argv[1:]]
threads = [threading.Thread(target=probe, args=t) for t in targets]
[t.start() for t in threads]
[t.join() for t in threads]
"""


def probe(client: paramiko.SSHClient, *targets: tuple[str, int]) -> dict[tuple[str, int], str]:
    """What the guest gets dialling each of TARGETS (address, port), all at once."""
    args = " ".join(shlex.quote(f"{host}:{port}") for host, port in targets)
    rc, out, err = ssh.run(client, f"python3 -c {shlex.quote(PROBE)} {args}", timeout=60)
    assert rc == 0, err
    results = {}
    for line in out.splitlines():
        host, port, result = line.split(" ", 2)
        results[(host, int(port))] = result
    assert set(results) == set(targets), out
    return results


def launch(svc: RunningService, key_name: str) -> tuple[dict, paramiko.SSHClient]:
    [inst] = svc.call("POST", "/v1/instances", expect=202,
                      json={"size": "t3.micro", "key_name": key_name, "ports": [{"guest_port": 8080}]})["instances"]
    inst = svc.wait_ssh(inst["id"])
    return inst, ssh.wait_for_login(inst["ssh"]["host"], inst["ssh"]["port"], inst["ssh"]["user"], svc.key,
                                    time.monotonic() + 120)


def serve_http(client: paramiko.SSHClient, port: int, text: str) -> None:
    """An HTTP server in the guest answering TEXT on guest PORT (python3's, in the background)."""
    root = f"/tmp/www{port}"
    rc, out, err = ssh.run(client, f"mkdir -p {root} && echo {shlex.quote(text)} > {root}/index.html && "
                                   f"(setsid nohup python3 -m http.server {port} --directory {root} "
                                   "</dev/null >/dev/null 2>&1 &)")
    assert rc == 0, err or out




def has_ipv6(client: paramiko.SSHClient) -> bool:
    """Whether the guest has its fec0::/64 address (slirp's router advertisement)."""
    for _ in range(30):
        rc, out, _ = ssh.run(client, "ip -6 -o addr show scope site; ip -6 -o addr show scope global")
        if "fec0:" in out:
            return True
        time.sleep(1)
    return False


def service(qemu_tmp, settings, ssh_ports, forward_ports, **overrides) -> RunningService:
    svc = RunningService(qemu_tmp("guestnet-"), settings.image_library, ssh_ports, forward_ports=forward_ports,
                         reconcile_interval=3600, **overrides)
    created = svc.call("POST", "/v1/keypairs", json={"name": "guestnet"}, expect=201)
    svc.key = paramiko.Ed25519Key.from_private_key(io.StringIO(created["private_key"]))
    return svc


def refused(result: str) -> bool:
    return result.startswith("error:")


# -- restricted (the default) ------------------------------------------------------------

@pytest.fixture(scope="class")
def restricted(built_image, settings, qemu_tmp):
    """The service with its default settings and one guest of it: (service, instance, SSH client)."""
    built_image(settings.default_image)
    svc = service(qemu_tmp, settings, (43400, 43409), (43420, 43429))
    try:
        assert not svc.settings.guest_outbound
        inst, client = launch(svc, "guestnet")
        yield svc, inst, client
        client.close()
    finally:
        svc.close()


class TestRestricted:
    def test_the_gateway_reaches_nothing_of_the_hosts_loopback(self, restricted):
        svc, inst, client = restricted
        token = "loopback-listener"
        v4, v6 = HostListener("127.0.0.1", token), HostListener("::1", token)
        try:
            assert has_ipv6(client), "the guest has no IPv6 address: its fec0::2 probe would prove nothing"
            api_port = int(svc.url.rsplit(":", 1)[1])
            results = probe(client, ("10.0.2.2", api_port), ("10.0.2.2", inst["ssh"]["port"]),
                            ("10.0.2.2", inst["ports"][0]["host_port"]), ("10.0.2.2", v4.port),
                            ("fec0::2", v6.port))
            assert all(refused(r) for r in results.values()), results
            assert (v4.accepted, v6.accepted) == (0, 0)
            for listener in (v4, v6):  # there to be reached: the host reaches them
                with socket.create_connection((listener.address, listener.port), timeout=5) as s:
                    assert s.makefile().readline().strip() == token
        finally:
            v4.close()
            v6.close()
        definition = svc.service.default_driver.definition(f"computed-{inst['id']}")
        assert "restrict=on" in definition

    def test_ssh_and_forwarded_ports_still_work_from_the_host(self, restricted):
        svc, inst, client = restricted
        rc, out, _ = ssh.run(client, "hostname")
        assert rc == 0 and out.strip() == inst["id"]
        [web] = inst["ports"]
        serve_http(client, 8080, "asked for at launch")
        assert http_get(web) == "asked for at launch\n"
        added = svc.call("POST", f"/v1/instances/{inst['id']}/ports", expect=201, json={"guest_port": 9090})
        serve_http(client, 9090, "added while running")
        assert http_get(added) == "added while running\n"


# -- outbound -------------------------------------------------------------------------------

def everything_but(*allowed) -> list:
    """Every IPv4 and IPv6 range except ALLOWED ones."""
    out = []
    for net in allowed:
        everything = ipaddress.ip_network("0.0.0.0/0" if net.version == 4 else "::/0")
        out += sorted(everything.address_exclude(net))
    return out


def qemu_uid_of(domain: str) -> int:
    pid = Path(f"/run/libvirt/qemu/{domain}.pid").read_text().strip()
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid in /proc/{pid}/status")


def counters() -> list[int]:
    listing = json.loads(subprocess.run(["nft", "-j", "list", "table", FAMILY, TABLE], capture_output=True,
                                        text=True, check=True).stdout)["nftables"]
    return [e["counter"]["packets"] for o in listing if "rule" in o for e in o["rule"]["expr"] if "counter" in e]


@pytest.fixture(scope="class")
def network():
    """The test's own network namespace (tests/netns.py)."""
    if subprocess.run(["nft", "list", "table", FAMILY, TABLE], capture_output=True).returncode == 0:
        pytest.fail(f"the table {FAMILY} {TABLE} is already there: another service runs with guest outbound "
                    "on; this test would remove its rules")
    with TestNetwork() as net:
        yield net


@pytest.fixture(scope="class")
def outbound(built_image, settings, qemu_tmp, network):
    """The service with guest outbound on (its forbidden ranges: all but the test network's
    allowed ones) and one guest of it: (service, instance, SSH client); its table gone after."""
    built_image(settings.default_image)
    allowed = (ipaddress.ip_network(network.allowed[4]).supernet(new_prefix=24),
               ipaddress.ip_network(network.allowed[6]).supernet(new_prefix=64))
    forbidden = everything_but(*allowed)
    assert all(any(ipaddress.ip_address(network.forbidden[v]) in n for n in forbidden) for v in (4, 6))
    try:
        svc = service(qemu_tmp, settings, (43410, 43419), (43430, 43439), guest_outbound=True,
                      guest_forbidden_ranges=tuple(forbidden))
        try:
            inst, client = launch(svc, "guestnet")
            yield svc, inst, client
            client.close()
        finally:
            svc.close()
    finally:
        GuestFirewall(settings).remove()
    assert subprocess.run(["nft", "list", "table", FAMILY, TABLE], capture_output=True).returncode != 0


class TestOutbound:
    def test_the_rules_are_installed_for_the_user_qemu_runs_as(self, outbound):
        svc, inst, _ = outbound
        assert svc.service.firewall.problem() is None
        uid = pwd.getpwnam(qemu_user()).pw_uid
        assert qemu_uid_of(f"computed-{inst['id']}") == uid != 0
        listing = json.loads(subprocess.run(["nft", "-j", "list", "table", FAMILY, TABLE], capture_output=True,
                                            text=True, check=True).stdout)["nftables"]
        [jump] = [o["rule"] for o in listing if "rule" in o and o["rule"]["chain"] == "output"]
        assert jump["expr"][0]["match"] == {"op": "==", "left": {"meta": {"key": "skuid"}}, "right": uid}
        assert "restrict=on" not in svc.service.default_driver.definition(f"computed-{inst['id']}")

    def test_the_guest_reaches_out_but_not_the_host_nor_forbidden_ranges(self, outbound, network):
        svc, inst, client = outbound
        token = "host-listener"
        v4, v6, own = HostListener("127.0.0.1", token), HostListener("::1", token), HostListener(network.host[4], token)
        before = counters()
        try:
            assert has_ipv6(client)
            api_port = int(svc.url.rsplit(":", 1)[1])
            results = probe(client, (network.allowed[4], network.port), (network.allowed[6], network.port),
                            (network.forbidden[4], network.port), (network.forbidden[6], network.port),
                            ("10.0.2.2", api_port), ("10.0.2.2", inst["ssh"]["port"]), ("10.0.2.2", v4.port),
                            ("fec0::2", v6.port), (network.host[4], own.port))
            for family in (4, 6):
                assert results[(network.allowed[family], network.port)] == f"connected: {network.token}", results
                assert network.reached_at(network.allowed[family])
                assert refused(results[(network.forbidden[family], network.port)]), results
                assert not network.reached_at(network.forbidden[family], timeout=0.5)
            for target in (("10.0.2.2", api_port), ("10.0.2.2", inst["ssh"]["port"]), ("10.0.2.2", v4.port),
                           ("fec0::2", v6.port), (network.host[4], own.port)):
                assert refused(results[target]), (target, results)
            assert (v4.accepted, v6.accepted, own.accepted) == (0, 0, 0)
        finally:
            for listener in (v4, v6, own):
                listener.close()
        host_addresses, forbidden4, forbidden6 = (after - b for after, b in zip(counters(), before))
        # QEMU's own sockets met the rules: the refusals above were the firewall's
        assert host_addresses >= 5 and forbidden4 >= 1 and forbidden6 >= 1, counters()

    def test_ssh_and_forwarded_ports_still_work_from_the_host(self, outbound):
        svc, inst, client = outbound
        rc, out, _ = ssh.run(client, "hostname")
        assert rc == 0 and out.strip() == inst["id"]
        [web] = inst["ports"]
        serve_http(client, 8080, "outbound guest")
        assert http_get(web) == "outbound guest\n"
