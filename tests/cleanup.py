"""What tests leave behind in the process-wide test:///default host: nothing."""

from __future__ import annotations

from computed.accounts.registry import Caller

ADMIN = Caller("000000000000", "test-admin", admin=True)


def terminate_all(service, timeout: float = 10) -> None:
    """Terminate every instance of SERVICE's store that is not ending, and wait for it."""
    rows, _ = service.instances.describe(ADMIN, limit=1000)
    for inst in rows:
        if inst.state not in ("terminated", "shutting-down"):
            service.instances.terminate(ADMIN, inst.id)
    service.worker.idle(timeout=timeout)
