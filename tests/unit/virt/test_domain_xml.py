"""The libvirt domain XML of an instance: its shape, that libvirt's test driver accepts it,
and that values stay data whatever characters they hold."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

import libvirt
import pytest

from computed.virt import domain_xml
from computed.virt.domain_xml import METADATA_NS, QEMU_NS, DomainSpec

libvirt.registerErrorHandler(lambda ctx, err: None, None)

METADATA = {"id": "i-0123456789abcdef0", "owner": "default", "size": "t3.micro", "image": "debian-12-podman",
            "image-version": "1.0.0", "reservation": "r-0123456789abcdef0"}


def spec(**changes) -> DomainSpec:
    base = DomainSpec(
        name="computed-i-0123456789abcdef0", domain_type="test", vcpus=2, memory_mib=1024,
        kernel="/var/lib/computed/images/x/abc/vmlinuz", initrd="/var/lib/computed/images/x/abc/initrd.img",
        cmdline="root=/dev/vda console=ttyS0", disk="/var/lib/computed/instances/i-1/disk.qcow2",
        seed="/var/lib/computed/instances/i-1/seed.iso", console_log="/var/lib/computed/instances/i-1/console.log",
        ssh_host="127.0.0.1", ssh_port=42211, metadata=dict(METADATA))
    return dataclasses.replace(base, **changes)


@pytest.fixture
def conn():
    conn = libvirt.open("test:///default")
    yield conn
    for dom in conn.listAllDomains():
        if dom.name().startswith("computed-"):
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    conn.close()


def test_shape():
    s = spec(domain_type="kvm")
    root = ET.fromstring(domain_xml.build(s))
    assert root.tag == "domain" and root.get("type") == "kvm"
    assert root.findtext("name") == s.name
    memory = root.find("memory")
    assert (memory.text, memory.get("unit")) == ("1024", "MiB")
    assert root.findtext("vcpu") == "2"
    assert root.find("os/type").text == "hvm"
    assert root.findtext("os/kernel") == s.kernel
    assert root.findtext("os/initrd") == s.initrd
    assert root.findtext("os/cmdline") == s.cmdline
    assert root.find("cpu").get("mode") == "host-passthrough"
    assert root.findtext("on_poweroff") == "destroy"

    disks = root.findall("devices/disk")
    assert len(disks) == 2
    root_disk, seed = disks
    for disk in disks:
        assert disk.get("type") == "file" and disk.get("device") == "disk"
        assert disk.find("target").get("bus") == "virtio"
    assert root_disk.find("source").get("file") == s.disk
    assert (root_disk.find("target").get("dev"), root_disk.find("driver").get("type")) == ("vda", "qcow2")
    assert root_disk.find("readonly") is None
    assert seed.find("source").get("file") == s.seed
    assert (seed.find("target").get("dev"), seed.find("driver").get("type")) == ("vdb", "raw")
    assert seed.find("readonly") is not None

    for tag in ("serial", "console"):
        device = root.find(f"devices/{tag}")
        # a pty logged through virtlogd, which caps the log's size; QEMU never writes the file
        assert device.get("type") == "pty"
        assert device.find("source") is None
        assert device.find("log").get("file") == s.console_log
        assert device.find("log").get("append") == "on"
    assert root.find("devices/console/target").get("type") == "serial"
    assert root.find("devices/interface") is None  # the NIC is on QEMU's command line

    args = [a.get("value") for a in root.findall(f"{{{QEMU_NS}}}commandline/{{{QEMU_NS}}}arg")]
    assert args[0] == "-netdev" and args[2] == "-device"
    assert "hostfwd=tcp:127.0.0.1:42211-:22" in args[1].split(",")
    assert args[1].startswith("user,id=computed-net0,")
    assert "addr=0x1e" in args[3].split(",") and "netdev=computed-net0" in args[3].split(",")
    assert args[3].startswith("virtio-net-pci,")


def test_no_cpu_element_for_the_test_driver():
    assert ET.fromstring(domain_xml.build(spec())).find("cpu") is None


def test_accepted_by_the_test_driver(conn):
    s = spec()
    dom = conn.defineXML(domain_xml.build(s))
    try:
        assert dom.name() == s.name
        assert dom.maxMemory() == 1024 * 1024  # KiB
        assert dom.info()[3] == 2
        xml = dom.XMLDesc()
        assert domain_xml.read_metadata(xml) == METADATA
        back = ET.fromstring(xml)
        assert [d.find("source").get("file") for d in back.findall("devices/disk")] == [s.disk, s.seed]
        assert back.findtext("os/cmdline") == s.cmdline
        dom.create()
        assert dom.isActive()
        dom.destroy()
    finally:
        dom.undefine()
    assert s.name not in [d.name() for d in conn.listAllDomains()]


def test_metadata_round_trip():
    assert domain_xml.read_metadata(domain_xml.build(spec())) == METADATA


def test_read_metadata_of_a_domain_that_is_not_ours():
    assert domain_xml.read_metadata("<domain type='kvm'><name>other</name></domain>") == {}
    assert domain_xml.read_metadata("<domain><metadata><x:y xmlns:x='urn:x'/></metadata></domain>") == {}


HOSTILE = [
    "</computed:id><evil/><computed:id>",
    "<![CDATA[ x ]]>",
    "]]>",
    "a & b &amp; &lt; &#x41; &unknown;",
    "\"double\" and 'single' quotes",
    "line one\nline two\n",
    "tab\tseparated",
    "../../../etc/passwd",
    "<?xml version='1.0'?><!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>&e;",
    "ünïcödé ✓ 日本",
    "${HOME} $(reboot) `id`",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_metadata_values_stay_data(value, conn):
    metadata = dict(METADATA, owner=value, image=value + value)
    xml = domain_xml.build(spec(metadata=metadata))
    assert domain_xml.read_metadata(xml) == metadata
    root = ET.fromstring(xml)
    assert not [el for el in root.iter() if el.tag in ("evil", "x") or "ENTITY" in el.tag]
    baseline = ET.fromstring(domain_xml.build(spec()))
    assert [el.tag for el in root.iter()] == [el.tag for el in baseline.iter()]  # no element added or lost
    # and libvirt sees the same values
    dom = conn.defineXML(xml)
    try:
        assert domain_xml.read_metadata(dom.XMLDesc()) == metadata
    finally:
        dom.undefine()


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_paths_and_cmdline_stay_data(value):
    s = spec(kernel="/k/" + value, cmdline="root=/dev/vda " + value, disk="/d/" + value, seed=value,
             console_log="/c/" + value, name="computed-" + value.replace("\n", " "))
    root = ET.fromstring(domain_xml.build(s))
    assert root.findtext("name") == s.name
    assert root.findtext("os/kernel") == s.kernel
    assert root.findtext("os/cmdline") == s.cmdline
    assert [d.find("source").get("file") for d in root.findall("devices/disk")] == [s.disk, s.seed]
    assert root.find("devices/serial/log").get("file") == s.console_log
    baseline = ET.fromstring(domain_xml.build(spec()))
    assert [el.tag for el in root.iter()] == [el.tag for el in baseline.iter()]


def test_probe_domain_has_no_disks_and_no_network():
    root = ET.fromstring(domain_xml.build_probe(spec(domain_type="kvm", disk="", seed="")))
    assert root.findall("devices/disk") == []
    assert root.find(f"{{{QEMU_NS}}}commandline") is None
    assert root.findtext("os/kernel") == spec().kernel
    assert root.find("devices/serial/log").get("file") == spec().console_log


def test_metadata_namespace():
    root = ET.fromstring(domain_xml.build(spec()))
    inst = root.find(f"metadata/{{{METADATA_NS}}}instance")
    assert inst is not None
    assert [child.tag.split("}", 1)[1] for child in inst] == list(METADATA)


def netdev_of(xml: str) -> list[str]:
    root = ET.fromstring(xml)
    args = [a.get("value") for a in root.findall(f"{{{QEMU_NS}}}commandline/{{{QEMU_NS}}}arg")]
    return args[args.index("-netdev") + 1].split(",")


def test_forwarded_ports_follow_ssh_on_the_user_network():
    xml = domain_xml.build(spec(forwards=(("127.0.0.1", 8080, 80), ("127.0.0.1", 43000, 5432))))
    assert netdev_of(xml) == ["user", "id=computed-net0", "restrict=on", "hostfwd=tcp:127.0.0.1:42211-:22",
                              "hostfwd=tcp:127.0.0.1:8080-:80", "hostfwd=tcp:127.0.0.1:43000-:5432"]


def test_the_user_network_is_restricted_unless_guests_have_outbound():
    """Restricted, a guest's connections go nowhere: not to the gateway 10.0.2.2 / fec0::2,
    which is the host's loopback (the API, every instance's SSH and forwarded ports)."""
    assert domain_xml.netdev_options("127.0.0.1", 42211) == [
        ("id", "computed-net0"), ("restrict", "on"), ("hostfwd", "tcp:127.0.0.1:42211-:22")]
    assert "restrict=on" in netdev_of(domain_xml.build(spec()))
    outbound = netdev_of(domain_xml.build(spec(outbound=True, forwards=(("127.0.0.1", 8080, 80),))))
    assert outbound == ["user", "id=computed-net0", "hostfwd=tcp:127.0.0.1:42211-:22", "hostfwd=tcp:127.0.0.1:8080-:80"]
    assert not any(o.startswith("restrict") for o in outbound)
    # the service offers guests nothing yet: no guestfwd
    assert domain_xml.GUEST_SERVICES == ()
    assert not any(key == "guestfwd" for key, _ in domain_xml.netdev_options("127.0.0.1", 42211))


def test_what_the_service_offers_guests_goes_after_the_forwards():
    options = domain_xml.netdev_options("127.0.0.1", 42211, (("127.0.0.1", 8080, 80),),
                                        guest_services=("tcp:10.0.2.100:80-cmd:/usr/bin/metadata --id i-1",))
    assert [key for key, _ in options] == ["id", "restrict", "hostfwd", "hostfwd", "guestfwd"]
    assert options[-1] == ("guestfwd", "tcp:10.0.2.100:80-cmd:/usr/bin/metadata --id i-1")


def test_netdev_values_cannot_add_options():
    """QEMU splits -netdev at single commas: one inside a value is doubled, so it stays the value's."""
    value = domain_xml.netdev_value([("id", "n"), ("guestfwd", "tcp:10.0.2.100:80-cmd:x,restrict=off")])
    assert value == "user,id=n,guestfwd=tcp:10.0.2.100:80-cmd:x,,restrict=off"
    with pytest.raises(ValueError):
        domain_xml.netdev_value([("restrict=off,x", "on")])


def test_with_forwards_replaces_only_the_forwards():
    before = domain_xml.build(spec(forwards=(("127.0.0.1", 8080, 80),)))
    after = domain_xml.with_forwards(before, "127.0.0.1", 42211, (("127.0.0.1", 9090, 90),))
    assert netdev_of(after) == ["user", "id=computed-net0", "restrict=on", "hostfwd=tcp:127.0.0.1:42211-:22",
                                "hostfwd=tcp:127.0.0.1:9090-:90"]
    none = domain_xml.with_forwards(after, "127.0.0.1", 42211, ())
    assert netdev_of(none) == ["user", "id=computed-net0", "restrict=on", "hostfwd=tcp:127.0.0.1:42211-:22"]
    # everything else as it was
    strip = lambda xml: [e for e in ET.fromstring(xml).iter() if e.tag != f"{{{QEMU_NS}}}arg"]  # noqa: E731
    assert [(e.tag, e.attrib, e.text) for e in strip(before)] == [(e.tag, e.attrib, e.text) for e in strip(none)]
    with pytest.raises(ValueError):
        domain_xml.with_forwards(domain_xml.build_probe(spec()), "127.0.0.1", 42211, ())


def test_with_forwards_restricts_a_domain_defined_without_it():
    """A domain an older service defined (no restrict=on) is restricted when it is rewritten;
    with outbound it is not."""
    old = domain_xml.build(spec(outbound=True, forwards=(("127.0.0.1", 8080, 80),)))
    assert "restrict=on" not in netdev_of(old)
    renewed = domain_xml.with_forwards(old, "127.0.0.1", 42211, (("127.0.0.1", 8080, 80),))
    assert netdev_of(renewed) == netdev_of(domain_xml.build(spec(forwards=(("127.0.0.1", 8080, 80),))))
    assert domain_xml.netdev_of(renewed) == ",".join(netdev_of(renewed))
    assert "restrict=on" not in netdev_of(domain_xml.with_forwards(renewed, "127.0.0.1", 42211, (), outbound=True))
    assert domain_xml.netdev_of(domain_xml.build_probe(spec())) is None


def test_forwards_survive_libvirtd(tmp_path, libvirtd_up):
    """qemu:///system keeps the forwards in a domain's persistent definition, and a rewrite of
    them (define only: nothing boots)."""
    from computed.virt.libvirt.connection import LibvirtDriver
    host = LibvirtDriver("qemu:///system")
    name = f"computed-test-forwards-{tmp_path.name[-8:]}"
    xml = domain_xml.build(spec(name=name, domain_type="qemu", forwards=(("127.0.0.1", 8080, 80),)))
    host.define(xml)
    try:
        assert "hostfwd=tcp:127.0.0.1:8080-:80" in netdev_of(host.definition(name))
        host.define(domain_xml.with_forwards(host.definition(name), "127.0.0.1", 42211, (("127.0.0.1", 9090, 90),)))
        assert netdev_of(host.definition(name))[2:] == ["restrict=on", "hostfwd=tcp:127.0.0.1:42211-:22",
                                                        "hostfwd=tcp:127.0.0.1:9090-:90"]
    finally:
        host.undefine(name)
        host.close()
    assert host.definition(name) is None
