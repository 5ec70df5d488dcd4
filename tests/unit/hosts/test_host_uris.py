"""What the core takes as a host's libvirt URI (computed/hosts.py check_uri), whoever calls
it, and how long opening a host that does not answer may hold its caller."""

from __future__ import annotations

import datetime as dt
import socket
import threading

import pytest

from computed.virt.libvirt import connection as libvirt_driver
from computed.clock import FakeClock
from computed.store.engine import Database
from computed.errors import InvalidParameterValue, ServiceUnavailable
from computed.hosts.registry import Hosts, check_uri, uri_hostname
from computed.store.models import Host
from computed.settings import Settings


@pytest.mark.parametrize("uri", [
    "qemu:///system", "qemu+ssh://root@node-2/system", "qemu+ssh://root@127.0.0.1:2222/system?keyfile=/k&no_verify=1",
    "qemu+tls://node-2.example/system", "qemu+libssh2://root@node-2/system?known_hosts=/srv/known_hosts&sshauth=privkey", "test:///default", "test:///srv/nodes/a.xml", "test+unix:///default",
])
def test_good_uris(uri):
    assert check_uri(uri) == uri


@pytest.mark.parametrize("uri, why", [
    ("qemu+ext:///system?command=/bin/sh", "not a libvirt URI"),  # ext runs a local program
    ("qemu+ssh://root@h/system?command=/tmp/x", "command"),
    ("qemu+ssh://root@h/system?COMMAND=/tmp/x", "command"),
    ("qemu+ssh://root@h/system?no_verify=1;%63ommand=/tmp/x", "command"),
    ("qemu+ssh://root@h/system?netcat=/tmp/nc", "netcat"),
    ("qemu+libssh2://root@h/system?known_hosts=/k&known_hosts_verify=auto", "known_hosts_verify"),
    ("qemu+libssh://root@h/system", "libssh transport is not supported"),  # it crashes the process
    ("qemu+libssh://root@h/system?keyfile=/k", "qemu+libssh2://"),
    ("test:///etc/shadow", "node description"),  # libvirt's error would quote its first line
    ("test+unix:///etc/shadow", "node description"),
    ("qemu+ssh://[x/system", "libvirt can take"),
    ("qemu+ssh://h:port/system", "libvirt can take"),
    ("qemu:///system with space", "not a libvirt URI"),
    ("", "not a libvirt URI"),
    (None, "not a libvirt URI"),
    ("q" * 260 + ":///x", "not a libvirt URI"),
])
def test_bad_uris(uri, why):
    with pytest.raises(InvalidParameterValue) as e:
        check_uri(uri)
    assert why in e.value.message


def test_the_address_defaults_to_the_uris_machine():
    assert uri_hostname("qemu+ssh://root@node-2:22/system") == "node-2"
    assert uri_hostname("qemu:///system") is None


def test_a_host_that_never_answers_is_unreachable_after_the_open_timeout(monkeypatch):
    """A TCP peer on loopback that accepts and then says nothing, as a silent host would."""
    monkeypatch.setattr(libvirt_driver, "OPEN_TIMEOUT", 1.0)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    accepted = []
    stop = threading.Event()

    def accept():
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(silent.accept()[0])
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    host = libvirt_driver.LibvirtDriver(f"qemu+tcp://127.0.0.1:{silent.getsockname()[1]}/system")
    try:
        with pytest.raises(ServiceUnavailable) as e:
            host.capacity()
        assert "no answer within 1 s" in e.value.message
        assert accepted  # it did reach the peer: the timeout, not a refusal, ended the wait
        with pytest.raises(ServiceUnavailable):  # the next call waits on the same attempt, not a new one
            host.ping()
        assert len(accepted) == 1
    finally:
        stop.set()
        for conn in accepted:
            conn.close()
        silent.close()


def test_a_stored_host_on_a_refused_transport_is_unreachable_and_never_opened(tmp_path, monkeypatch):
    """A host added before its transport was refused (or written into the store by hand) is
    reported unreachable, saying why, and no connection to it is opened."""
    db = Database(f"sqlite:///{tmp_path / 'c.db'}")
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with db.session() as s:
        s.add(Host(name="old", uri="qemu+libssh://root@node-2/system", address="node-2", enabled=True,
                   image_mode="shared", vcpus=4, memory_mib=4096, reachable=True, checked_at=t0, created_at=t0))
    opened = []
    monkeypatch.setattr(libvirt_driver.libvirt, "open", lambda uri: opened.append(uri))
    hosts = Hosts(Settings.load({"COMPUTED_VAR_DIR": str(tmp_path)}), db, FakeClock(t0))
    try:
        errors = hosts.check(["old"])
        assert "the host old is not opened: the libssh transport is not supported" in errors["old"]
        assert (hosts.get("old").host.reachable, hosts.get("old").host.last_error) == (False, errors["old"])
        with pytest.raises(ServiceUnavailable, match="host rm, then host add"):
            hosts.driver("old")
        assert opened == []
    finally:
        hosts.close()
        db.dispose()
