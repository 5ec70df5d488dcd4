"""The libvirt driver against libvirt's test driver (``test:///default``, in this process, no
daemon): a domain built by domain_xml defined, started, powered off and undefined; which
domains are a store's; the capabilities a URI gives; and that it is a HostDriver.

test:///default is one shared state per process: every domain a test defines here is
powered off and undefined when the test ends."""

from __future__ import annotations

import dataclasses
import uuid

import libvirt
import pytest

from computed.errors import ServiceUnavailable
from computed.virt import domain_xml
from computed.virt.driver import Capabilities, HostDriver
from computed.virt.libvirt.connection import DOMAIN_PREFIX, LibvirtDriver

TEST_URI = "test:///default"


def spec(instance_id: str, **metadata: str) -> domain_xml.DomainSpec:
    return domain_xml.DomainSpec(
        name=DOMAIN_PREFIX + instance_id, domain_type="test", vcpus=1, memory_mib=256,
        kernel="/nonexistent/vmlinuz", initrd="/nonexistent/initrd.img", cmdline="console=ttyS0",
        disk="/nonexistent/disk.qcow2", seed="/nonexistent/seed.iso", console_log="/nonexistent/console.log",
        ssh_host="127.0.0.1", ssh_port=42211, metadata={"id": instance_id, **metadata})


def new_id() -> str:
    return f"i-{uuid.uuid4().hex[:17]}"


@pytest.fixture
def driver():
    """A LibvirtDriver on test:///default; the domains named in ``driver.made`` are removed after."""
    d = LibvirtDriver(TEST_URI)
    d.made = []
    yield d
    for name in d.made:
        d.power_off(name)
        d.undefine(name)
    d.close()


def define(driver: LibvirtDriver, instance_id: str, **metadata: str) -> str:
    s = spec(instance_id, **metadata)
    driver.made.append(s.name)
    driver.define(domain_xml.build(s))
    return s.name


def test_a_domain_is_defined_started_powered_off_and_undefined(driver):
    name = define(driver, new_id(), store="s1")
    assert driver.state(name) == "shutoff"
    assert domain_xml.read_metadata(driver.definition(name))["store"] == "s1"
    driver.start(name)
    assert driver.state(name) == "running"
    driver.start(name)  # already running: nothing to do
    assert driver.wait_for_state(name, "running", timeout=1)
    driver.power_off(name)
    assert driver.state(name) == "shutoff"
    driver.power_off(name)  # not running: nothing to do
    driver.undefine(name)
    assert driver.state(name) is None and driver.definition(name) is None
    driver.undefine(name)  # not defined: nothing to do


def test_a_domain_that_is_not_defined(driver):
    name = DOMAIN_PREFIX + new_id()
    with pytest.raises(LookupError):
        driver.start(name)
    driver.shutdown(name)
    driver.reboot(name)
    driver.power_off(name)
    assert driver.state(name) is None
    assert driver.wait_for_state(name, "shutoff", timeout=0.1)  # gone counts as reached


def test_a_failed_call_is_reported_by_its_operation(driver):
    failed = []
    driver.on_error = failed.append
    with pytest.raises(libvirt.libvirtError):
        driver.define("<domain type='test'><name>not enough</name></domain>")
    assert failed == ["define"]


def test_power_off_keeps_libvirts_name_as_its_metrics_label(driver, monkeypatch):
    """The operation is power_off; a failure is counted as "destroy", as before its rename."""
    failed = []
    driver.on_error = failed.append
    name = define(driver, new_id())
    driver.start(name)

    def broken(self):
        raise libvirt.libvirtError("the host hiccuped")

    with monkeypatch.context() as m, pytest.raises(libvirt.libvirtError):
        m.setattr(libvirt.virDomain, "destroy", broken)
        driver.power_off(name)
    assert failed == ["destroy"]


def test_our_domains_are_the_stores_only(driver):
    mine, placed, other, bare = new_id(), new_id(), new_id(), new_id()
    store = f"store-{uuid.uuid4().hex[:8]}"
    define(driver, mine, store=store)
    define(driver, placed, store=store, host="node-2")
    define(driver, other, store="another-store")
    bare_name = DOMAIN_PREFIX + bare  # a domain of ours by name, without our metadata
    driver.made.append(bare_name)
    driver.define(domain_xml.build(dataclasses.replace(spec(bare), metadata={})))
    driver.start(DOMAIN_PREFIX + placed)
    assert driver.our_domains(store) == {mine: (DOMAIN_PREFIX + mine, "shutoff", ""),
                                         placed: (DOMAIN_PREFIX + placed, "running", "node-2")}
    assert driver.our_domains(f"store-{uuid.uuid4().hex[:8]}") == {}


def test_capacity_and_ping_of_the_test_host(driver):
    cpus, memory_mib = driver.capacity()
    assert cpus > 0 and memory_mib > 0
    driver.ping()
    assert driver.connections == 1  # one connection, kept


def test_a_host_that_cannot_be_opened_is_unavailable(tmp_path):
    driver = LibvirtDriver(f"test://{tmp_path / 'missing.xml'}")
    with pytest.raises(ServiceUnavailable):
        driver.capacity()
    with pytest.raises(ServiceUnavailable):
        driver.ping()


def test_the_test_drivers_domain_type(driver, tmp_path):
    assert driver.domain_type("auto", tmp_path / "vmlinuz", tmp_path / "initrd.img", tmp_path) == "test"


# -- capabilities, from the URI ------------------------------------------------------------

@pytest.mark.parametrize("uri", [TEST_URI, "test:///tmp/node.xml", "test+unix:///default"])
def test_the_test_driver_runs_no_guest_and_no_qemu(uri):
    assert LibvirtDriver(uri).capabilities == Capabilities(boots_guests=False, port_forwards=False)


@pytest.mark.parametrize("uri", ["qemu:///system", "qemu:///session", "qemu+ssh://root@node-2/system",
                                 "qemu+tls://node-3/system"])
def test_qemu_boots_guests_whose_forwards_can_change(uri):
    """Known from the URI alone: nothing is opened (these hosts do not exist)."""
    driver = LibvirtDriver(uri)
    assert driver.capabilities == Capabilities(boots_guests=True, port_forwards=True)
    assert driver.connections == 0


def test_capabilities_are_frozen():
    with pytest.raises(AttributeError):
        LibvirtDriver(TEST_URI).capabilities.boots_guests = True


# -- the interface -------------------------------------------------------------------------

def test_the_libvirt_driver_is_a_host_driver(driver):
    assert isinstance(driver, HostDriver)
    typed: HostDriver = driver  # what the core is annotated with
    assert typed.capabilities.boots_guests is False


def test_what_lacks_a_drivers_operations_is_not_one():
    class Partial:
        uri = TEST_URI

        def start(self, name: str) -> None:
            pass

    assert not isinstance(Partial(), HostDriver)
