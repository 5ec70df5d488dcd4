"""Background work: launches, stops, starts, reboots and terminations run here, so the API
answers at once. Work on one instance runs one piece at a time (a per-instance lock)."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, threads: int):
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="computed-worker")
        self._locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()
        self._futures: set[Future] = set()
        self._active: Counter[str] = Counter()  # key -> work queued or running

    def lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks[key]

    def submit(self, key: str, fn: Callable[[], None], description: str) -> Future:
        def run():
            try:
                fn()
            except Exception:
                log.exception("%s failed", description)
            finally:
                with self._guard:
                    self._active[key] -= 1
                    if self._active[key] <= 0:
                        del self._active[key]

        with self._guard:
            self._active[key] += 1
        try:
            future = self._pool.submit(run)
        except RuntimeError:  # shut down
            with self._guard:
                self._active[key] -= 1
                if self._active[key] <= 0:
                    del self._active[key]
            raise
        with self._guard:
            self._futures.add(future)
        future.add_done_callback(lambda f: self._discard(f))
        return future

    def _discard(self, future: Future) -> None:
        with self._guard:
            self._futures.discard(future)

    def busy(self, key: str) -> bool:
        """Whether work for KEY is queued or running."""
        with self._guard:
            return self._active.get(key, 0) > 0

    def idle(self, timeout: float | None = None) -> bool:
        """Wait until no work is queued or running (tests use this)."""
        while True:
            with self._guard:
                pending = set(self._futures)
            if not pending:
                return True
            _, not_done = cf.wait(pending, timeout=timeout)
            if not_done:
                return False

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
