"""Pausing Python's cyclic garbage collector while a bulk computation allocates many small
acyclic objects (a billing report makes about a million rows): each collection would
walk every live object again, which costs more than the computation itself. Reference
counting still frees everything; the collector resumes when the last pause ends, so
concurrent pauses (threads of the API server) nest."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_pauses = 0
_was_enabled = False


@contextmanager
def paused_gc() -> Iterator[None]:
    global _pauses, _was_enabled
    with _lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                gc.enable()
