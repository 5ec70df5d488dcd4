"""The background worker (``computed.compute.worker``) on its own: work is queued under a key
(an instance id); ``lock(key)`` is the one lock of a key, which the work takes so that one
instance's steps run one at a time while other instances' run beside them; ``busy(key)``
says whether work of a key is queued or running; a failure is logged, never raised; once
shut down, queued work is dropped and nothing more can be queued; ``idle`` waits for all
of it, work queued by work included."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from computed.compute.worker import Worker

#: long enough for a loaded machine, short enough that a hang fails the test soon
TIMEOUT = 10


@pytest.fixture
def make_worker():
    """make_worker(threads) -> a Worker, shut down when the test ends."""
    made = []

    def make(threads: int = 4) -> Worker:
        made.append(Worker(threads))
        return made[-1]

    yield make
    for worker in made:
        worker.shutdown()


def blocker():
    """(fn, started, release): FN signals STARTED, then waits until RELEASE is set."""
    started, release = threading.Event(), threading.Event()

    def fn():
        started.set()
        assert release.wait(TIMEOUT)

    return fn, started, release


def test_one_lock_per_key(make_worker):
    worker = make_worker()
    assert worker.lock("i-1") is worker.lock("i-1")
    assert worker.lock("i-1") is not worker.lock("i-2")


def test_work_of_one_key_runs_one_piece_at_a_time(make_worker):
    worker = make_worker(threads=4)
    inside, most, ran = 0, 0, []
    guard = threading.Lock()

    def step(n: int):
        nonlocal inside, most
        with worker.lock("i-1"):
            with guard:
                inside += 1
                most = max(most, inside)
            time.sleep(0.01)
            with guard:
                inside -= 1
            ran.append(n)

    futures = [worker.submit("i-1", lambda n=n: step(n), f"step {n}") for n in range(8)]
    for future in futures:
        future.result(TIMEOUT)
    assert sorted(ran) == list(range(8))
    assert most == 1


def test_work_of_other_keys_runs_at_once(make_worker):
    worker = make_worker(threads=2)
    both = threading.Barrier(2, timeout=TIMEOUT)
    met = []

    def step(key: str):
        with worker.lock(key):
            both.wait()  # broken (and nothing appended) unless the other key's step runs meanwhile
            met.append(key)

    for key in ("i-1", "i-2"):
        worker.submit(key, lambda key=key: step(key), f"step of {key}")
    assert worker.idle(TIMEOUT)
    assert sorted(met) == ["i-1", "i-2"]


def test_busy_while_queued_or_running(make_worker):
    worker = make_worker(threads=1)
    first, first_started, release_first = blocker()
    second, _, release_second = blocker()
    queued, _, release_queued = blocker()
    f1 = worker.submit("i-1", first, "first")
    f2 = worker.submit("i-1", second, "second")
    f3 = worker.submit("i-2", queued, "queued behind")
    assert first_started.wait(TIMEOUT)
    assert worker.busy("i-1")  # running
    assert worker.busy("i-2")  # queued: the one thread is taken
    assert not worker.busy("i-3")

    release_first.set()
    f1.result(TIMEOUT)
    assert worker.busy("i-1")  # its second piece is still to come
    release_second.set()
    f2.result(TIMEOUT)
    assert not worker.busy("i-1")
    release_queued.set()
    f3.result(TIMEOUT)
    assert not worker.busy("i-2")


def test_a_failure_is_logged_not_raised(make_worker, caplog):
    worker = make_worker()

    def fail():
        raise ValueError("no room")

    with caplog.at_level(logging.ERROR, logger="computed.compute.worker"):
        future = worker.submit("i-1", fail, "launch i-1")
        assert future.result(TIMEOUT) is None
    [record] = [r for r in caplog.records if r.name == "computed.compute.worker"]
    assert record.getMessage() == "launch i-1 failed"
    assert record.exc_info and isinstance(record.exc_info[1], ValueError)
    assert not worker.busy("i-1")
    # and the key's next work runs as usual
    ran = []
    worker.submit("i-1", lambda: ran.append(1), "again").result(TIMEOUT)
    assert ran == [1]


def test_nothing_is_queued_after_shutdown(make_worker):
    worker = make_worker()
    worker.shutdown()
    ran = []
    with pytest.raises(RuntimeError):
        worker.submit("i-1", lambda: ran.append(1), "too late")
    assert not worker.busy("i-1")  # the refused work is not counted
    assert worker.idle(TIMEOUT)
    assert ran == []


def test_shutdown_drops_queued_work(make_worker):
    worker = make_worker(threads=1)
    first, started, release = blocker()
    ran = []
    running = worker.submit("i-1", first, "running")
    queued = worker.submit("i-2", lambda: ran.append(1), "queued")
    assert started.wait(TIMEOUT)
    worker.shutdown()
    release.set()
    assert running.result(TIMEOUT) is None  # what runs finishes
    assert queued.cancelled()
    assert worker.idle(TIMEOUT)
    assert ran == []


def test_idle_waits_for_all_work_and_the_work_it_queues(make_worker):
    worker = make_worker()
    assert worker.idle(0)  # nothing queued: at once
    first, started, release = blocker()
    worker.submit("i-1", first, "first")
    assert started.wait(TIMEOUT)
    assert not worker.idle(0.05)

    done = []

    def then():
        time.sleep(0.1)
        done.append("then")

    def chain():
        worker.submit("i-2", then, "then")  # as a launch goes on with its readiness

    release.set()
    worker.submit("i-1", chain, "chain")
    assert worker.idle(TIMEOUT)
    assert done == ["then"]
