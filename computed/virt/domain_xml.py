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
    for arg in ("-netdev", user_netdev(spec.ssh_host, spec.ssh_port, spec.forwards),
                "-device", f"virtio-net-pci,netdev={NETDEV},bus=pci.0,addr={USER_NET_PCI_ADDR}"):
        ET.SubElement(cmd, f"{{{QEMU_NS}}}arg", {"value": arg})
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode")


def hostfwd(address: str, host_port: int, guest_port: int) -> str:
    """One forwarding rule as QEMU's hostfwd option and its hostfwd_add command take it."""
    return f"tcp:{address}:{int(host_port)}-:{int(guest_port)}"


def user_netdev(ssh_host: str, ssh_port: int, forwards: tuple[tuple[str, int, int], ...] = ()) -> str:
    """The -netdev value: user-mode networking forwarding SSH, then FORWARDS."""
    rules = [hostfwd(ssh_host, ssh_port, 22), *(hostfwd(*f) for f in forwards)]
    return ",".join([f"user,id={NETDEV}", *(f"hostfwd={r}" for r in rules)])


def with_forwards(xml: str, ssh_host: str, ssh_port: int, forwards: tuple[tuple[str, int, int], ...]) -> str:
    """A domain's XML (ours, as libvirt gives it back) with its user-mode NIC forwarding
    SSH and FORWARDS instead of what it forwarded before; ValueError if it has none."""
    root = ET.fromstring(xml)
    args = root.findall(f"{{{QEMU_NS}}}commandline/{{{QEMU_NS}}}arg")
    for flag, value in itertools.pairwise(args):
        if flag.get("value") == "-netdev" and value.get("value", "").startswith(f"user,id={NETDEV},"):
            value.set("value", user_netdev(ssh_host, ssh_port, forwards))
            return ET.tostring(root, encoding="unicode")
    raise ValueError("the domain has no user-mode network of ours")


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
