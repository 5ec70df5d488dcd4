"""The system libvirtd is shared by the fast and the VM part of the suite, which scripts/test
runs at once: a test that stops libvirtd holds this lock exclusively, one that needs it up
holds it shared. A file lock (flock) in the temporary directory, so that it also holds
between two checkouts of the project on one machine."""

from __future__ import annotations

import contextlib
import fcntl
import tempfile
from collections.abc import Iterator
from pathlib import Path

PATH = Path(tempfile.gettempdir()) / "computed-tests-libvirtd.lock"


@contextlib.contextmanager
def _held(mode: int) -> Iterator[None]:
    with open(PATH, "a") as f:
        fcntl.flock(f, mode)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def shared() -> contextlib.AbstractContextManager[None]:
    """While held, no test stops libvirtd."""
    return _held(fcntl.LOCK_SH)


def exclusive() -> contextlib.AbstractContextManager[None]:
    """While held, no other test relies on libvirtd."""
    return _held(fcntl.LOCK_EX)
