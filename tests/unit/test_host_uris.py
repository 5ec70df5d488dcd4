"""What the core takes as a host's libvirt URI (computed/hosts.py check_uri), whoever calls
it, and how long opening a host that does not answer may hold its caller."""

from __future__ import annotations

import socket
import threading

import pytest

from computed import libvirt_driver
from computed.errors import InvalidParameterValue, ServiceUnavailable
from computed.hosts import check_uri, uri_hostname


@pytest.mark.parametrize("uri", [
    "qemu:///system", "qemu+ssh://root@node-2/system", "qemu+ssh://root@127.0.0.1:2222/system?keyfile=/k&no_verify=1",
    "qemu+tls://node-2.example/system", "test:///default", "test:///srv/nodes/a.xml", "test+unix:///default",
])
def test_good_uris(uri):
    assert check_uri(uri) == uri


@pytest.mark.parametrize("uri, why", [
    ("qemu+ext:///system?command=/bin/sh", "not a libvirt URI"),  # ext runs a local program
    ("qemu+ssh://root@h/system?command=/tmp/x", "command"),
    ("qemu+ssh://root@h/system?COMMAND=/tmp/x", "command"),
    ("qemu+ssh://root@h/system?no_verify=1;%63ommand=/tmp/x", "command"),
    ("qemu+ssh://root@h/system?netcat=/tmp/nc", "netcat"),
    ("qemu+libssh://root@h/system?known_hosts=/etc/passwd", "known_hosts"),
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
    host = libvirt_driver.LibvirtHost(f"qemu+tcp://127.0.0.1:{silent.getsockname()[1]}/system")
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
