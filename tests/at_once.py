"""Requests released together, for tests of what happens at once (limits, placement)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")


def at_once(send: Callable[[int], T], n: int) -> list[T]:
    """send(i) for i in range(N), all released together from N threads."""
    barrier = threading.Barrier(n)

    def one(i):
        barrier.wait()
        return send(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))
