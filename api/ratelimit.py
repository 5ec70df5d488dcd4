"""A limit on failed authentications: a wrong HTTP Basic secret, a bad SigV4 signature, a
failed console login. After ``[api] auth_failures_per_source`` failures from one source
address (IPv6: one /64, which one machine usually has whole) or ``auth_failures_per_key``
claiming one access key id, within ``auth_failure_window_seconds`` of the first, every
request from that source or with that key id answers 429 ``RequestLimitExceeded`` with
``Retry-After`` (the EC2 API too, not EC2's 503: the client should wait, not retry) until
the window ends, good credentials or not. Other sources and keys are unaffected.

Only failures count, and they count alike whether the key id exists or not, with one
message for either limit: the answers never tell a key that exists from one that does not.
Requests without credentials do not count (a browser opening a page is not guessing).

The counts are kept in each service process (several processes on one store each count on
their own: the limit is per process), under a lock shared by the process's request
threads. A request being checked holds a place in its counts, so concurrent attempts never
get past the limit either. The source is the peer's address, or what the trusted proxies
say (``[api] trusted_proxies``)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from flask import Flask, Response, current_app, g, request

from computed.errors import AuthFailure, ComputedError

from .service import service

EXTENSION = "computed-auth-failures"
#: names tracked per counter at most; past that, expired ones go, then the oldest
MAX_TRACKED = 100_000
#: a key id longer than any real one is counted under its first characters
KEY_ID_CHARS = 128
MESSAGE = ("too many failed authentications from this address or with this access key id; "
           "try again in {seconds} seconds")


class TooManyFailures(ComputedError):
    code, status = "RequestLimitExceeded", 429

    def __init__(self, seconds: int):
        super().__init__(MESSAGE.format(seconds=seconds))
        self.retry_after = seconds


@dataclass
class _Window:
    start: dt.datetime
    failures: int = 0
    pending: int = 0


class Counter:
    """Failures by name within a window that starts at a name's first failure."""

    def __init__(self, limit: int, window: dt.timedelta):
        self.limit, self.window = limit, window
        self._windows: dict[str, _Window] = {}

    def _current(self, name: str, now: dt.datetime) -> _Window:
        found = self._windows.get(name)
        if found is None:
            found = self._windows[name] = _Window(now)
        elif found.failures and now >= found.start + self.window:
            found.start, found.failures = now, 0
        return found

    def wait(self, name: str, now: dt.datetime) -> int | None:
        """Seconds until NAME may try again, or None if it may now (caller holds the lock)."""
        found = self._current(name, now)
        if found.failures + found.pending < self.limit:
            return None
        if found.failures >= self.limit:
            return max(1, math.ceil((found.start + self.window - now).total_seconds()))
        return 1  # the limit is reached only by attempts still being checked

    def begin(self, name: str) -> None:
        self._windows[name].pending += 1

    def end(self, name: str, failed: bool, now: dt.datetime) -> None:
        found = self._current(name, now)
        found.pending -= 1
        if failed:
            if not found.failures:
                found.start = now
            found.failures += 1
        elif not found.failures and not found.pending:
            del self._windows[name]
        if len(self._windows) > MAX_TRACKED:
            self._prune(now)

    def failures(self, name: str) -> int:
        found = self._windows.get(name)
        return found.failures if found else 0

    def _prune(self, now: dt.datetime) -> None:
        for name in [n for n, w in self._windows.items()
                     if not w.pending and (not w.failures or now >= w.start + self.window)]:
            del self._windows[name]
        for name in list(self._windows)[:max(0, len(self._windows) - MAX_TRACKED)]:
            if not self._windows[name].pending:
                del self._windows[name]


class FailureLimit:
    """The per-source and per-key counters of one process."""

    def __init__(self, per_source: int, per_key: int, window: dt.timedelta):
        self.sources = Counter(per_source, window)
        self.keys = Counter(per_key, window)
        self._lock = threading.Lock()

    def _pairs(self, source: str, key_id: str | None) -> list[tuple[Counter, str]]:
        return [(self.sources, source)] + ([(self.keys, key_id[:KEY_ID_CHARS])] if key_id else [])

    def begin(self, source: str, key_id: str | None, now: dt.datetime) -> None:
        """Hold a place for an attempt, or raise TooManyFailures."""
        pairs = self._pairs(source, key_id)
        with self._lock:
            waits = [w for counter, name in pairs if (w := counter.wait(name, now)) is not None]
            if waits:
                raise TooManyFailures(max(waits))
            for counter, name in pairs:
                counter.begin(name)

    def end(self, source: str, key_id: str | None, failed: bool, now: dt.datetime) -> None:
        with self._lock:
            for counter, name in self._pairs(source, key_id):
                counter.end(name, failed, now)


def limit() -> FailureLimit:
    found = current_app.extensions.get(EXTENSION)
    if found is None:
        settings = service().settings
        found = current_app.extensions.setdefault(EXTENSION, FailureLimit(
            settings.auth_failures_per_source, settings.auth_failures_per_key,
            dt.timedelta(seconds=settings.auth_failure_window)))
    return found


def source() -> str:
    """Who is asking: the peer's address (or the trusted proxies' X-Forwarded-For), an IPv6
    one as its /64."""
    address = request.remote_addr or "-"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def signed_key_id(query: list[tuple[str, str]]) -> str | None:
    """The access key id a SigV4 request claims (its Credential's first part), unchecked."""
    credential = next((v for k, v in query if k == "X-Amz-Credential"), None)
    if credential is None:
        _, _, rest = request.headers.get("Authorization", "").strip().partition(" ")
        fields = dict(part.strip().partition("=")[::2] for part in rest.split(","))
        credential = fields.get("Credential")
    return credential.partition("/")[0] or None if credential else None


@contextmanager
def counted(key_id: str | None) -> Iterator[None]:
    """Around checking credentials that claim KEY_ID: refuse at once if the source or the
    key is over the limit; count an AuthFailure."""
    found, who, clock = limit(), source(), service().clock
    try:
        found.begin(who, key_id, clock.now())
    except TooManyFailures as e:
        g.auth_limit = e  # for the Retry-After header
        raise
    failed = False
    try:
        yield
    except AuthFailure:
        failed = True
        raise
    finally:
        found.end(who, key_id, failed, clock.now())


def _retry_after(response: Response) -> Response:
    error = g.get("auth_limit")
    if error is not None and response.status_code == 429:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def register(app: Flask) -> None:
    app.after_request(_retry_after)
