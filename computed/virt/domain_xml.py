"""libvirt domain XML for an instance, built with ElementTree: every value a user or an
image supplies is element text or an attribute value, escaped by the library, never
spliced into markup."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
#: our <metadata> namespace: what virsh users see to know which instance a domain is
METADATA_NS = "https://computed.dev/xmlns/instance/1"
METADATA_PREFIX = "computed"
#: QEMU's user-mode NIC goes to a PCI slot libvirt leaves free (slot 2 is taken otherwise)
USER_NET_PCI_ADDR = "0x1e"
#: the id of that NIC's QEMU network backend (hostfwd_add and hostfwd_remove name it)
NETDEV = "computed-net0"

ET.register_namespace("qemu", QEMU_NS)
ET.register_namespace(METADATA_PREFIX, METADATA_NS)


@dataclass(frozen=True)
class DomainSpec:
    name: str
    domain_type: str  # kvm | qemu (test on libvirt's test driver)
    vcpus: int
    memory_mib: int
    kernel: str
    initrd: str
    cmdline: str
    disk: str
    seed: str
    console_log: str
    ssh_host: str
    ssh_port: int
    #: more guest TCP ports forwarded: (host address, host port, guest port)
    forwards: tuple[tuple[str, int, int], ...] = ()
    #: the guest may open connections out (the host's guest firewall judges them); else restrict=on
    outbound: bool = False
    #: instance id, owner, size, image...: shown in <metadata>
    metadata: dict[str, str] = field(default_factory=dict)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrib.items()})
    if text is not None:
        el.text = text
    return el


def read_instance_element(xml: str) -> dict[str, str]:
    """Our <metadata> element as libvirt's virDomainGetMetadata returns it, as a dict
    (empty if unreadable)."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return {}
    # libvirt may hand the element back with or without its namespace
    return {child.tag.rpartition("}")[2]: child.text or "" for child in root}


def build(spec: DomainSpec) -> str:
    dom = ET.Element("domain", {"type": spec.domain_type})
    _sub(dom, "name", spec.name)
    meta = _sub(dom, "metadata")
    inst = ET.SubElement(meta, f"{{{METADATA_NS}}}instance")
    for key, value in spec.metadata.items():
        ET.SubElement(inst, f"{{{METADATA_NS}}}{key}").text = str(value)
    _sub(dom, "memory", str(spec.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(spec.vcpus), placement="static")

    os_ = _sub(dom, "os")
    _sub(os_, "type", "hvm", arch="x86_64", machine="pc")
    _sub(os_, "kernel", spec.kernel)
    _sub(os_, "initrd", spec.initrd)
    _sub(os_, "cmdline", spec.cmdline)
    features = _sub(dom, "features")
    _sub(features, "acpi")  # graceful shutdown, and a much faster boot
    _sub(features, "apic")
    if spec.domain_type == "kvm":
        _sub(dom, "cpu", mode="host-passthrough")
    elif spec.domain_type == "qemu":
        _sub(dom, "cpu", mode="maximum")  # every feature TCG emulates (-cpu max)
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")

    devices = _sub(dom, "devices")
    for path, target, fmt, readonly in ((spec.disk, "vda", "qcow2", False), (spec.seed, "vdb", "raw", True)):
        disk = _sub(devices, "disk", type="file", device="disk")
        _sub(disk, "driver", name="qemu", type=fmt, discard="unmap" if not readonly else "ignore")
        _sub(disk, "source", file=path)
        _sub(disk, "target", dev=target, bus="virtio")
        if readonly:
            _sub(disk, "readonly")
    # the serial port is a pty (output nobody reads is dropped, not blocked on); libvirt
    # logs it through virtlogd, which caps the file's size (computed/virt/console_log.py)
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "log", file=spec.console_log, append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "log", file=spec.console_log, append="on")
    _sub(console, "target", type="serial", port="0")
    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")
    _sub(devices, "memballoon", model="virtio")

    # QEMU user-mode networking with SSH (and the user's ports) forwarded from ports of the
    # host's address: libvirt 9.0 has no element for hostfwd, so the NIC goes on QEMU's own
    # command line.
    cmd = ET.SubElement(dom, f"{{{QEMU_NS}}}commandline")
    for arg in ("-netdev", user_netdev(spec.ssh_host, spec.ssh_port, spec.forwards, spec.outbound),
                "-device", f"virtio-net-pci,netdev={NETDEV},bus=pci.0,addr={USER_NET_PCI_ADDR}"):
        ET.SubElement(cmd, f"{{{QEMU_NS}}}arg", {"value": arg})
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode")


def hostfwd(address: str, host_port: int, guest_port: int) -> str:
    """One forwarding rule as QEMU's hostfwd option and its hostfwd_add command take it."""
    return f"tcp:{address}:{int(host_port)}-:{int(guest_port)}"


#: what the service itself offers guests on the user network, as QEMU ``guestfwd`` values
#: (``tcp:10.0.2.100:80-cmd:...``): the only connections a restricted guest can open. None
#: yet; the metadata service (issue 19) goes here.
GUEST_SERVICES: tuple[str, ...] = ()


def netdev_options(ssh_host: str, ssh_port: int, forwards: tuple[tuple[str, int, int], ...] = (),
                   outbound: bool = False, guest_services: tuple[str, ...] = GUEST_SERVICES
                   ) -> list[tuple[str, str]]:
    """The options of the instance's ``-netdev user``, in order, as (key, value) pairs.

    Without OUTBOUND the network is restricted: QEMU routes nothing the guest sends to the
    host or beyond (without it, the gateway 10.0.2.2 and fec0::2 are the host's loopback,
    where the API, every instance's SSH and forwarded ports and any local database
    listen). The host still reaches the guest through the forwards (SSH, then FORWARDS),
    and the guest reaches only GUEST_SERVICES. With OUTBOUND, QEMU connects wherever the
    guest dials, and the host's guest firewall (``guest_firewall``) refuses the host's own
    and the forbidden addresses."""
    options = [("id", NETDEV)]
    if not outbound:
        options.append(("restrict", "on"))
    options += [("hostfwd", hostfwd(*rule)) for rule in ((ssh_host, ssh_port, 22), *forwards)]
    options += [("guestfwd", service) for service in guest_services]
    return options


def netdev_value(options: list[tuple[str, str]]) -> str:
    """OPTIONS as QEMU's -netdev value: ``user,key=value,...``, a comma inside a value doubled
    (QEMU's escape), so no value can add an option of its own."""
    for key, _ in options:
        if not key.isidentifier():
            raise ValueError(f"not a netdev option name: {key!r}")
    return ",".join(["user", *(f"{key}={value.replace(',', ',,')}" for key, value in options)])


def user_netdev(ssh_host: str, ssh_port: int, forwards: tuple[tuple[str, int, int], ...] = (),
                outbound: bool = False) -> str:
    """The -netdev value: user-mode networking (restricted unless OUTBOUND) forwarding SSH,
    then FORWARDS."""
    return netdev_value(netdev_options(ssh_host, ssh_port, forwards, outbound))


def with_forwards(xml: str, ssh_host: str, ssh_port: int, forwards: tuple[tuple[str, int, int], ...],
                  outbound: bool = False) -> str:
    """A domain's XML (ours, as libvirt gives it back) with its user-mode NIC made anew:
    forwarding SSH and FORWARDS, restricted unless OUTBOUND, whatever it had before (a
    domain defined before restrict=on gets it); ValueError if it has none."""
    root = ET.fromstring(xml)
    arg = _netdev_arg(root)
    if arg is None:
        raise ValueError("the domain has no user-mode network of ours")
    arg.set("value", user_netdev(ssh_host, ssh_port, forwards, outbound))
    return ET.tostring(root, encoding="unicode")


def netdev_of(xml: str) -> str | None:
    """The -netdev value of our user-mode NIC in a domain's XML, or None."""
    arg = _netdev_arg(ET.fromstring(xml))
    return None if arg is None else arg.get("value")


def _netdev_arg(root: ET.Element) -> ET.Element | None:
    args = root.findall(f"{{{QEMU_NS}}}commandline/{{{QEMU_NS}}}arg")
    for flag, value in itertools.pairwise(args):
        if flag.get("value") == "-netdev" and value.get("value", "").startswith(f"user,id={NETDEV},"):
            return value
    return None


def build_probe(spec: DomainSpec) -> str:
    """A disk-less transient domain that only boots the kernel (for probing KVM)."""
    dom = ET.fromstring(build(spec))
    devices = dom.find("devices")
    for disk in devices.findall("disk"):
        devices.remove(disk)
    dom.remove(dom.find(f"{{{QEMU_NS}}}commandline"))
    return ET.tostring(dom, encoding="unicode")


def read_metadata(xml: str) -> dict[str, str]:
    """Our <metadata> of a domain's XML (empty if it is not one of ours)."""
    root = ET.fromstring(xml)
    inst = root.find(f"metadata/{{{METADATA_NS}}}instance")
    if inst is None:
        return {}
    return {child.tag.split("}", 1)[1]: child.text or "" for child in inst}
