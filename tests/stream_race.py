"""Run as ``python -m tests.stream_race URI STORAGE_DIR INSTANCE_ID READS``: what a service
does to a copy-mode host at once, in a process of its own so that a crash is an exit status.

Two threads read the instance's console back through libvirt's storage streams
(CopyStorage.console, as GET /v1/instances/ID/console does) READS times each, while two
others ask the host's capacity (LibvirtDriver.capacity, as the housekeeping's host check does)
until they are done; all on one LibvirtDriver, so on one connection with its keepalive and
libvirt's event loop, as in the service. Prints a JSON line: the reads, the capacity calls,
and the distinct console texts read."""

from __future__ import annotations

import faulthandler
import json
import sys
import threading
from pathlib import Path

from computed.virt.libvirt.copy_storage import CopyStorage
from computed.virt.libvirt.connection import LibvirtDriver

TAIL = 64 * 1024


def main(uri: str, storage_dir: str, instance_id: str, reads: int) -> None:
    faulthandler.enable()
    host = LibvirtDriver(uri)
    storage = CopyStorage(host, "remote", Path(storage_dir), db=None)
    done = threading.Event()
    texts: set[str] = set()
    counts = {"reads": 0, "capacity": 0}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def guarded(work):
        def run():
            try:
                work()
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                errors.append(e)
                done.set()
        return run

    def read():
        for _ in range(reads):
            text = storage.console(instance_id, TAIL)
            with lock:
                texts.add(text)
                counts["reads"] += 1

    def check():
        while not done.is_set():
            host.capacity()
            with lock:
                counts["capacity"] += 1

    readers = [threading.Thread(target=guarded(read)) for _ in range(2)]
    checkers = [threading.Thread(target=guarded(check)) for _ in range(2)]
    for t in checkers + readers:
        t.start()
    for t in readers:
        t.join()
    done.set()
    for t in checkers:
        t.join()
    host.close()
    if errors:
        raise errors[0]
    print(json.dumps({**counts, "texts": sorted(texts)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
