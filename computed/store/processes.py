"""The service processes sharing one store, each registered with a heartbeat, so that one
process never takes another's work in flight for interrupted work.

Every instance records the process that handles it (``Instance.handled_by``), written in
the transaction of the state change that process made. Reconciliation in any process
leaves alone an instance whose handler is alive; once the handler is gone (its heartbeat
stale, its row removed by a clean shutdown, or, on the same machine, its pid no longer
running), its unfinished work is taken over at once. Liveness is a matter of real time,
not of the service's (injectable) clock."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import uuid

from sqlalchemy import delete, or_, select, update

from .engine import Database
from .models import ServiceProcess

log = logging.getLogger(__name__)

#: a process that has not written its heartbeat for this long is taken for dead
STALE = dt.timedelta(seconds=30)
#: rows of dead processes are deleted after this long (they explain nothing any more)
FORGET = dt.timedelta(days=1)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _pid_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # runs, as another user
        return True


class Processes:
    def __init__(self, db: Database):
        self.db = db
        #: this process's id in the store
        self.id = uuid.uuid4().hex[:16]
        self.hostname = socket.gethostname()[:255]
        now = _now()
        with self.db.session() as s:
            s.add(ServiceProcess(id=self.id, hostname=self.hostname, pid=os.getpid(), started_at=now,
                                 heartbeat_at=now))

    def heartbeat(self) -> None:
        now = _now()
        with self.db.session() as s:
            found = s.execute(update(ServiceProcess).where(ServiceProcess.id == self.id)
                              .values(heartbeat_at=now)).rowcount
            if not found:  # removed by someone who took this process for dead: it is back
                s.add(ServiceProcess(id=self.id, hostname=self.hostname, pid=os.getpid(), started_at=now,
                                     heartbeat_at=now))
            s.execute(delete(ServiceProcess).where(ServiceProcess.heartbeat_at < now - FORGET))

    def alive(self) -> set[str]:
        """The ids of the processes alive now, this one included."""
        cutoff = _now() - STALE
        with self.db.reading() as s:
            rows = list(s.execute(select(ServiceProcess.id, ServiceProcess.hostname, ServiceProcess.pid)
                                  .where(or_(ServiceProcess.heartbeat_at >= cutoff, ServiceProcess.id == self.id))))
        return {pid_ for pid_, host, pid in rows
                if pid_ == self.id or host != self.hostname or pid == os.getpid() or _pid_runs(pid)}

    def close(self) -> None:
        """A clean shutdown: the others need not wait for the heartbeat to go stale."""
        try:
            with self.db.session() as s:
                s.execute(delete(ServiceProcess).where(ServiceProcess.id == self.id))
        except Exception:
            log.exception("unregistering the process %s", self.id)
