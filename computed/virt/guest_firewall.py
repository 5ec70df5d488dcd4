"""The host's firewall for guests that may open connections out (``[network] guest_outbound``).

QEMU's user-mode network has no network of its own on the host: a connection the guest
opens is a socket the QEMU process opens on the host, from the host's own namespace. Its
gateway (10.0.2.2, fec0::2) is the host's loopback, and any other address it dials is
dialled by the host. Without outbound the network is restricted (``restrict=on``, in
``domain_xml.netdev_options``) and none of this is needed. With outbound, this table refuses
what those sockets must not reach, telling them apart from the host's own by their owner:
the user libvirt runs QEMU as (``meta skuid``, which the output hook sees for every packet
a local socket sends).

The table is the service's own (``inet computed_guests``); it is replaced as a whole in one
nftables transaction, and no other table is touched. It is built as nftables' JSON (``nft
-j``), in the form ``nft -j list`` gives back, so that what is installed can be compared
with what should be."""

from __future__ import annotations

import copy
import ipaddress
import json
import logging
import pwd
import re
import subprocess
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from computed.settings import Network, Settings

log = logging.getLogger(__name__)

FAMILY = "inet"
TABLE = "computed_guests"
#: never reached by a guest, whatever the forbidden ranges say: "this network" (0.0.0.0 is
#: the host), loopback, link-local (a cloud's metadata address 169.254.169.254), multicast
#: and the limited broadcast
ALWAYS_FORBIDDEN = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "255.255.255.255/32",
    "::/128", "::1/128", "fe80::/10", "ff00::/8"))
#: the kinds of destination the host's routing table calls its own, or not one host's:
#: every address of the host's (loopback and each interface's), and broadcast, anycast and
#: multicast ones (in the order nft lists them)
HOST_ADDRESS_TYPES = ["local", "broadcast", "anycast", "multicast"]
#: where libvirt's QEMU driver is told which user runs QEMU
QEMU_CONF = Path("/etc/libvirt/qemu.conf")
#: the user libvirt runs QEMU as when qemu.conf names none (Debian's build)
DEFAULT_QEMU_USER = "libvirt-qemu"
REJECT = {"reject": {"type": "icmpx", "expr": "admin-prohibited"}}


class GuestFirewallError(RuntimeError):
    """The guest firewall is not in place and cannot be put there: guests with outbound
    network must not start."""


def qemu_user(conf: Path = QEMU_CONF) -> str:
    """The user libvirt runs QEMU as: ``user = "..."`` in its qemu.conf, else Debian's default."""
    try:
        text = conf.read_text()
    except FileNotFoundError:
        return DEFAULT_QEMU_USER
    except OSError as e:
        raise GuestFirewallError(f"cannot read {conf} to learn which user runs QEMU: {e}") from None
    found = re.findall(r'^\s*user\s*=\s*"([^"]*)"', text, re.MULTILINE)
    return found[-1] if found else DEFAULT_QEMU_USER


def qemu_uid(user: str) -> int:
    """USER's uid (libvirt's ``+N`` is uid N); GuestFirewallError if there is none, or it
    is root (the host's own sockets could not be told from QEMU's)."""
    if user.startswith("+") and user[1:].isdigit():
        uid = int(user[1:])
    else:
        try:
            uid = pwd.getpwnam(user).pw_uid
        except KeyError:
            raise GuestFirewallError(f"libvirt runs QEMU as {user!r} ({QEMU_CONF}), a user this host does not "
                                     "have") from None
    if uid == 0:
        raise GuestFirewallError(f"libvirt runs QEMU as root ({QEMU_CONF}: user = {user!r}): the guest firewall "
                                 "tells guests' connections from the host's own by their owner, so guest outbound "
                                 f"needs QEMU run as a user of its own (user = \"{DEFAULT_QEMU_USER}\")")
    return uid


def forbidden_sets(forbidden: Iterable[Network]) -> tuple[list[Network], list[Network]]:
    """ALWAYS_FORBIDDEN and FORBIDDEN as the fewest IPv4 and IPv6 ranges (nft refuses
    overlapping ones in a set)."""
    every = [*ALWAYS_FORBIDDEN, *forbidden]
    return tuple(list(ipaddress.collapse_addresses(n for n in every if n.version == v)) for v in (4, 6))


def _element(network: Network) -> str | dict:
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return {"prefix": {"addr": str(network.network_address), "len": network.prefixlen}}


def _rule(table: str, chain: str, *expr: dict) -> dict:
    return {"rule": {"family": FAMILY, "table": table, "chain": chain, "expr": list(expr)}}


def _match(left: dict, right, op: str = "==") -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


def ruleset(uid: int, forbidden: Iterable[Network], table: str = TABLE) -> list[dict]:
    """The table's sets, chains and rules (nft JSON objects, as ``nft -j list table`` shows
    them): QEMU's sockets (owned by UID) may send replies of what they have, and packets of
    TCP connections the host opened to them (the forwards); their new connections are
    refused to the host's own addresses, to the always-forbidden ranges and to FORBIDDEN
    (IPv4 and IPv6), and let through elsewhere. Nothing else is matched. TABLE: its name
    (another one only for tests)."""
    v4, v6 = forbidden_sets(forbidden)
    counter = {"counter": {"packets": 0, "bytes": 0}}
    return [
        {"table": {"family": FAMILY, "name": table}},
        *({"set": {"family": FAMILY, "name": name, "table": table, "type": kind, "flags": ["interval"],
                   "elem": [_element(n) for n in networks]}}
          for name, kind, networks in (("forbidden4", "ipv4_addr", v4), ("forbidden6", "ipv6_addr", v6))),
        {"chain": {"family": FAMILY, "table": table, "name": "output", "type": "filter", "hook": "output",
                   "prio": 0, "policy": "accept"}},
        {"chain": {"family": FAMILY, "table": table, "name": "guests"}},
        _rule(table, "output", _match({"meta": {"key": "skuid"}}, uid), {"jump": {"target": "guests"}}),
        _rule(table, "guests", _match({"ct": {"key": "state"}}, ["established", "related"], "in"), {"accept": None}),
        # A TCP packet that opens no connection belongs to one that is open: QEMU's side of
        # a forward the host dialled (SSH, the user's ports), even one opened before this
        # table was (conntrack then sees it first mid-stream, as new). QEMU's kernel opens
        # every connection with a SYN, so none opens past the rules below.
        _rule(table, "guests", _match({"&": [{"payload": {"protocol": "tcp", "field": "flags"}}, ["syn", "ack"]]}, "syn",
                               "!="), {"accept": None}),
        _rule(table, "guests", _match({"fib": {"result": "type", "flags": ["daddr"]}}, {"set": HOST_ADDRESS_TYPES}),
              copy.deepcopy(counter), REJECT),
        *(_rule(table, "guests", _match({"payload": {"protocol": proto, "field": "daddr"}}, f"@{name}"),
                copy.deepcopy(counter), REJECT)
          for proto, name in (("ip", "forbidden4"), ("ip6", "forbidden6"))),
    ]


def install_batch(objects: list[dict], table: str = TABLE) -> dict:
    """One nftables transaction that puts OBJECTS (the table first) in place of whatever the
    table TABLE held (it is made first, so that deleting it cannot fail)."""
    empty = {"table": {"family": FAMILY, "name": table}}
    return {"nftables": [{"add": empty}, {"delete": empty}, *({"add": obj} for obj in objects)]}


def normalized(listing: list[dict]) -> list[dict]:
    """LISTING (``nft -j list table``'s objects) without what the kernel adds: handles, the
    counters' figures, nft's own version; set elements in one order."""
    out = []
    for obj in listing:
        if "metainfo" in obj:
            continue
        obj = copy.deepcopy(obj)
        for body in obj.values():
            body.pop("handle", None)
            if "elem" in body:
                body["elem"] = sorted(body["elem"], key=json.dumps)
            for expr in body.get("expr", ()):
                if "counter" in expr:
                    expr["counter"] = {"packets": 0, "bytes": 0}
        out.append(obj)
    return out


def nft(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    """``nft ARGS``; GuestFirewallError if there is no nft."""
    try:
        return subprocess.run(["nft", *args], input=stdin, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise GuestFirewallError("guest outbound needs nftables' nft command, which this host does not have "
                                 "(Debian's nftables package; scripts/setup installs it)") from None


class GuestFirewall:
    """The guest firewall of this machine for SETTINGS' forbidden ranges. RUN runs nft; USER
    names the user QEMU runs as; TABLE is the table's name (another one only for tests)."""

    def __init__(self, settings: Settings, run: Callable[..., subprocess.CompletedProcess] = nft,
                 user: Callable[[], str] = qemu_user, table: str = TABLE):
        self.forbidden = settings.guest_forbidden_ranges
        self.table = table
        self._run = run
        self._user = user
        self._lock = threading.Lock()

    def expected(self) -> list[dict]:
        return ruleset(qemu_uid(self._user()), self.forbidden, self.table)

    def installed(self) -> list[dict] | None:
        """The table as the kernel has it (normalized), or None if there is none."""
        done = self._run(["-j", "list", "table", FAMILY, self.table])
        if done.returncode != 0:
            if "No such file or directory" in done.stderr:
                return None
            raise GuestFirewallError(f"nft cannot list the table {FAMILY} {self.table}: {done.stderr.strip()}")
        try:
            return normalized(json.loads(done.stdout)["nftables"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise GuestFirewallError(f"nft listed the table {FAMILY} {self.table} in a form this service cannot "
                                     "read") from None

    def problem(self) -> str | None:
        """What is wrong with the installed table, or None if it is as it should be."""
        have, want = self.installed(), normalized(self.expected())
        if have is None:
            return f"the table {FAMILY} {self.table} is missing"
        if have != want:
            extra = [o for o in have if o not in want]
            missing = [o for o in want if o not in have]
            return (f"the table {FAMILY} {self.table} differs from the service's rules: missing {json.dumps(missing)}; "
                    f"not the service's {json.dumps(extra)}")
        return None

    def ensure(self) -> None:
        """The table in place as it should be, installed (replacing what it held) if it is
        not; GuestFirewallError saying why if it cannot be."""
        with self._lock:
            before = self.problem()
            if before is None:
                return
            log.info("installing the guest firewall: %s", before)
            done = self._run(["-j", "-f", "-"], json.dumps(install_batch(self.expected(), self.table)))
            if done.returncode != 0:
                raise GuestFirewallError(f"the guest firewall cannot be installed (nft: {done.stderr.strip()}); "
                                         "guests with outbound network are not started without it")
            after = self.problem()
            if after is not None:
                raise GuestFirewallError(f"the guest firewall is not as installed ({after}); guests with outbound "
                                         "network are not started without it")

    def remove(self) -> None:
        """The table gone, if it is there (nothing else is touched)."""
        with self._lock:
            if self.installed() is not None:
                done = self._run(["delete", "table", FAMILY, self.table])
                if done.returncode != 0:
                    raise GuestFirewallError(f"nft cannot delete the table {FAMILY} {self.table}: "
                                             f"{done.stderr.strip()}")
