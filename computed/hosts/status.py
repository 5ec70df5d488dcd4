"""What the API shows about hosts besides their rows: whether the hosts of a page of
instances could be reached at their last check (one query for the whole page, as billing
does for costs). A host's room is ``capacity``'s."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select

from computed.store.engine import Database
from computed.store.models import Host


def reachability(db: Database, names: Iterable[str | None]) -> dict[str, bool]:
    """Host name -> reachable at its last check, for NAMES (None, an instance whose host was
    removed, is skipped; a name the store does not know is missing from the answer)."""
    wanted = sorted({name for name in names if name})
    if not wanted:
        return {}
    with db.reading() as s:
        return {name: bool(reachable) for name, reachable in
                s.execute(select(Host.name, Host.reachable).where(Host.name.in_(wanted)))}
