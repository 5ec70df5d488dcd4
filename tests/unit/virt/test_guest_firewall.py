"""The guest firewall (guest outbound on): its rules as data, and, where this runs as root
with nft, the rules in the kernel judging real sockets by their owner: a process of the
QEMU user's (here a throwaway uid in a table of the test's own) cannot reach the host's
loopback, its own addresses or the forbidden ranges, reaches an address of a network
namespace the test made, and still answers connections the host opens to it (the forwards);
every other process is left alone."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import time

import pytest

from computed.settings import DEFAULT_GUEST_FORBIDDEN, Settings
from computed.virt import guest_firewall
from computed.virt.guest_firewall import GuestFirewall, GuestFirewallError, qemu_uid, qemu_user, ruleset
from tests.fakes import FakeNft
from tests.netns import LISTENER, PYTHON, HostListener, TestNetwork, connect_as

UID = 64055


def settings(tmp_path, **changes) -> Settings:
    return dataclasses.replace(Settings.load({"COMPUTED_VAR_DIR": str(tmp_path)}), **changes)


def rules(objects: list[dict], chain: str) -> list[list[dict]]:
    return [o["rule"]["expr"] for o in objects if "rule" in o and o["rule"]["chain"] == chain]


def elements(objects: list[dict], name: str) -> set[str]:
    [found] = [o["set"] for o in objects if "set" in o and o["set"]["name"] == name]
    return {e if isinstance(e, str) else f"{e['prefix']['addr']}/{e['prefix']['len']}" for e in found["elem"]}


def test_only_the_qemu_users_sockets_are_judged(tmp_path):
    objects = ruleset(UID, settings(tmp_path).guest_forbidden_ranges)
    [chain] = [o["chain"] for o in objects if "chain" in o and o["chain"].get("hook")]
    assert (chain["hook"], chain["type"], chain["policy"]) == ("output", "filter", "accept")
    assert rules(objects, "output") == [[{"match": {"op": "==", "left": {"meta": {"key": "skuid"}}, "right": UID}},
                                         {"jump": {"target": "guests"}}]]
    assert {o["table"]["name"] for o in objects if "table" in o} == {"computed_guests"}
    assert all(o[kind]["table"] == "computed_guests" for o in objects for kind in o if kind != "table")


def test_replies_then_the_hosts_addresses_then_both_families_forbidden(tmp_path):
    objects = ruleset(UID, settings(tmp_path).guest_forbidden_ranges)
    guests = rules(objects, "guests")
    assert guests[0] == [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}},
                         {"accept": None}]
    # a forward's packets from QEMU's side (no new connection) are never refused
    assert guests[1][0]["match"]["right"] == "syn" and guests[1][-1] == {"accept": None}
    assert guests[2][0] == {"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}},
                                      "right": {"set": ["local", "broadcast", "anycast", "multicast"]}}}
    assert [g[0]["match"]["left"]["payload"]["protocol"] for g in guests[3:]] == ["ip", "ip6"]
    assert [g[0]["match"]["right"] for g in guests[3:]] == ["@forbidden4", "@forbidden6"]
    assert all(g[-1] == guest_firewall.REJECT for g in guests[2:])


def test_forbidden_ranges_and_the_always_forbidden_ones_are_in_the_sets(tmp_path):
    objects = ruleset(UID, settings(tmp_path).guest_forbidden_ranges)
    v4, v6 = elements(objects, "forbidden4"), elements(objects, "forbidden6")
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8"} <= v4
    assert {"169.254.0.0/16", "224.0.0.0/4", "255.255.255.255", "0.0.0.0/8"} <= v4
    assert {"fc00::/7", "fe80::/10", "ff00::/8"} <= v6 and "::/127" in v6  # :: and ::1, merged
    for text in DEFAULT_GUEST_FORBIDDEN:
        net = ipaddress.ip_network(text)
        assert any(net.subnet_of(ipaddress.ip_network(e)) for e in (v4 if net.version == 4 else v6))


def test_an_admin_may_narrow_the_ranges_but_not_open_the_host(tmp_path):
    objects = ruleset(UID, [])
    assert elements(objects, "forbidden4") == {"0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4",
                                               "255.255.255.255"}
    assert elements(objects, "forbidden6") == {"::/127", "fe80::/10", "ff00::/8"}
    # overlapping ranges are merged (nft refuses overlaps in a set)
    wide = ruleset(UID, [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("10.1.0.0/16"),
                         ipaddress.ip_network("2001:db8::/32")])
    assert "10.1.0.0/16" not in elements(wide, "forbidden4") and "2001:db8::/32" in elements(wide, "forbidden6")


def test_forbidden_ranges_setting(tmp_path):
    (tmp_path / "computed.toml").write_text('[network]\nguest_outbound = true\n'
                                            'guest_forbidden_ranges = ["198.19.0.0/16", "2001:2:1::/48"]\n')
    loaded = Settings.load({"COMPUTED_VAR_DIR": str(tmp_path)})
    assert loaded.guest_outbound is True
    assert loaded.guest_forbidden_ranges == (ipaddress.ip_network("198.19.0.0/16"),
                                             ipaddress.ip_network("2001:2:1::/48"))
    env = Settings.load({"COMPUTED_VAR_DIR": str(tmp_path), "COMPUTED_GUEST_FORBIDDEN_RANGES": "10.0.0.0/8,fc00::/7",
                         "COMPUTED_GUEST_OUTBOUND": "no"})
    assert env.guest_outbound is False and len(env.guest_forbidden_ranges) == 2
    default = Settings.load({"COMPUTED_VAR_DIR": str(tmp_path / "none")})
    assert default.guest_outbound is False
    assert [str(n) for n in default.guest_forbidden_ranges] == list(DEFAULT_GUEST_FORBIDDEN)
    from computed.settings import SettingsError
    for bad in ("10.0.0.1/8", "not-a-range", "10.0.0.0/33"):
        with pytest.raises(SettingsError, match="COMPUTED_GUEST_FORBIDDEN_RANGES"):
            Settings.load({"COMPUTED_VAR_DIR": str(tmp_path), "COMPUTED_GUEST_FORBIDDEN_RANGES": bad})


def test_the_qemu_user_is_libvirts(tmp_path):
    conf = tmp_path / "qemu.conf"
    assert qemu_user(conf) == "libvirt-qemu"  # no file: Debian's default
    conf.write_text('# user = "nobody"\n#user = "root"\n')
    assert qemu_user(conf) == "libvirt-qemu"
    conf.write_text('user = "nobody"\ngroup = "nogroup"\n')
    assert qemu_user(conf) == "nobody"
    assert qemu_uid("+4000000") == 4000000
    for root in ("root", "+0"):
        with pytest.raises(GuestFirewallError, match="runs QEMU as root"):
            qemu_uid(root)
    with pytest.raises(GuestFirewallError, match="does not have"):
        qemu_uid("no-such-user-here")


def test_ensure_installs_once_and_refuses_what_it_cannot_install(tmp_path):
    nft = FakeNft()
    fw = GuestFirewall(settings(tmp_path), run=nft, user=lambda: "+4000000")
    assert "missing" in fw.problem()
    fw.ensure()
    fw.ensure()
    assert nft.installs == 1 and fw.problem() is None
    nft.table[-1]["rule"]["expr"][0]["match"]["right"] = "@other"  # someone changed a rule
    assert "differs" in fw.problem()
    fw.ensure()
    assert nft.installs == 2 and fw.problem() is None

    with pytest.raises(GuestFirewallError, match="cannot be installed.*Operation not permitted"):
        GuestFirewall(settings(tmp_path), run=FakeNft(install_fails="Operation not permitted"),
                      user=lambda: "+4000000").ensure()
    with pytest.raises(GuestFirewallError, match="not as installed"):
        GuestFirewall(settings(tmp_path), run=FakeNft(lists_differently=True), user=lambda: "+4000000").ensure()
    with pytest.raises(GuestFirewallError, match="runs QEMU as root"):
        GuestFirewall(settings(tmp_path), run=FakeNft(), user=lambda: "root").ensure()


def test_no_nft_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GuestFirewallError, match="nftables package"):
        GuestFirewall(settings(tmp_path), user=lambda: "+4000000").ensure()


# -- in the kernel ---------------------------------------------------------------------

needs_root_nft = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"),
                                    reason="needs root, nft and ip")


@pytest.fixture
def network():
    with TestNetwork() as net:
        yield net


@pytest.fixture
def kernel_firewall(tmp_path, network):
    """The firewall in a table of the test's own for a throwaway uid, refusing the test
    network's forbidden ranges; gone after."""
    uid = 4_000_000 + secrets.randbelow(1_000_000)
    fw = GuestFirewall(settings(tmp_path, guest_forbidden_ranges=network.forbidden_ranges),
                       user=lambda: f"+{uid}", table=f"computed_guests_test_{secrets.token_hex(3)}")
    fw.uid = uid
    yield fw
    fw.remove()
    assert fw.installed() is None


@needs_root_nft
def test_in_the_kernel_the_qemu_users_connections_are_judged(kernel_firewall, network):
    fw, uid = kernel_firewall, kernel_firewall.uid
    other = subprocess.run(["nft", "add", "table", "inet", f"{fw.table}_other"], check=True)  # not ours: stays
    try:
        fw.ensure()
        assert fw.problem() is None
        loopback4, loopback6 = HostListener("127.0.0.1", network.token), HostListener("::1", network.token)
        own = HostListener(network.host[4], network.token)  # an address of the host's that is not loopback
        try:
            for listener in (loopback4, loopback6, own):
                assert connect_as(0, listener.address, listener.port) == network.token  # the host's own: untouched
                assert connect_as(uid, listener.address, listener.port).startswith("error"), listener.address
            assert (loopback4.accepted, loopback6.accepted, own.accepted) == (1, 1, 1)
        finally:
            for listener in (loopback4, loopback6, own):
                listener.close()
        for family in (4, 6):
            assert connect_as(uid, network.allowed[family], network.port) == network.token
            assert network.reached_at(network.allowed[family])
            assert connect_as(uid, network.forbidden[family], network.port).startswith("error")
            assert not network.reached_at(network.forbidden[family], timeout=0.5)
            assert connect_as(0, network.forbidden[family], network.port) == network.token  # root is not judged
        counters = [e["counter"]["packets"] for o in json.loads(subprocess.run(
            ["nft", "-j", "list", "table", "inet", fw.table], capture_output=True, text=True).stdout)["nftables"]
            if "rule" in o for e in o["rule"]["expr"] if "counter" in e]
        assert counters[0] >= 3 and counters[1] >= 1 and counters[2] >= 1, counters  # host's, v4 and v6 forbidden
        assert subprocess.run(["nft", "list", "table", "inet", f"{fw.table}_other"]).returncode == 0
    finally:
        if other.returncode == 0:
            subprocess.run(["nft", "delete", "table", "inet", f"{fw.table}_other"])


@needs_root_nft
def test_in_the_kernel_a_forward_the_host_opens_is_answered(kernel_firewall, network):
    """QEMU listens for each forward on the host's loopback: connections the host opens to
    it work, both families, even one open before the firewall was installed."""
    fw, uid = kernel_firewall, kernel_firewall.uid
    server = subprocess.Popen([PYTHON, "-I", str(LISTENER), network.token, "0", "::"], stdout=subprocess.PIPE,
                              text=True, user=uid, group=uid, extra_groups=[], cwd="/")
    try:
        port = int(server.stdout.readline().split()[1])
        before = socket.create_connection(("127.0.0.1", port), timeout=5)
        before_lines = before.makefile("rw")
        assert before_lines.readline().strip() == network.token
        # QEMU's side of a forward open before the rules speaks first once they are there (a
        # guest's output on an idle SSH session): conntrack has not seen the connection
        before_lines.write("later 2\n")
        before_lines.flush()
        time.sleep(0.3)  # the request and its acknowledgment are through before the rules are
        fw.ensure()
        assert before_lines.readline() == "late\n"
        for address in ("127.0.0.1", "::1"):
            assert connect_as(0, address, port) == network.token
        before_lines.write("still here\n")
        before_lines.flush()
        assert before_lines.readline() == "still here\n"
        before.close()
        assert connect_as(uid, "127.0.0.1", port).startswith("error")  # but QEMU's own user cannot dial it
    finally:
        server.kill()
        server.wait()
