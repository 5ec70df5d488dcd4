"""A host's addresses and whether a TCP port can be taken on one of them now: a host's SSH
and forwarded ports are bound there by QEMU, on this machine for a local host, on the host
itself for a remote one.

On this machine a bind test answers exactly (``port_is_free``). A remote host runs no code
of the service's, and libvirt offers no call that binds a port there, so its address is
asked from here (``nothing_listens``): a port someone listens on accepts the connection and
is taken. That sees every listener reachable from here (another service, another QEMU not
in this store); not a socket bound without listening, nor one behind a filter that drops
what this machine sends. QEMU's own bind is the last word: ``hostfwd_add`` on a running
guest fails at once (the change is undone), and a start whose port is taken fails."""

from __future__ import annotations

import socket

#: how long a remote host's address may take to answer or refuse a connection, in seconds
PROBE_TIMEOUT = 0.5


def port_is_free(host: str, port: int) -> bool:
    """Whether PORT can be bound on the address HOST of this machine now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def nothing_listens(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether nothing accepts a TCP connection to HOST:PORT from here now (refused, or no
    answer within TIMEOUT: no listener this machine can reach)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return False
    except OSError:
        return True


def port_is_free_on(address: str, port: int, local: bool) -> bool:
    """Whether PORT looks free on a host's ADDRESS now: a bind test on a host of this machine
    (LOCAL), else a connection from here to the remote host's address."""
    return port_is_free(address, port) if local else nothing_listens(address, port)
