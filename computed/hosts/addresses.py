"""This machine's addresses as a host's: ``port_is_free``, whether a TCP port can be taken
on one of them now (a local host's SSH and forwarded ports are bound there by QEMU)."""

from __future__ import annotations

import socket


def port_is_free(host: str, port: int) -> bool:
    """Whether PORT can be bound on the address HOST of this machine now."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False
