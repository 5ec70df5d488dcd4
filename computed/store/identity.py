"""Which store is which: ``store_id``, the short name of a store that the domains it made
carry in their metadata."""

from __future__ import annotations

import hashlib

from sqlalchemy.engine import make_url


def store_id(database_url: str) -> str:
    """Which store a domain belongs to (in its metadata), so that services sharing one
    libvirt host never take each other's domains for orphans."""
    shown = make_url(database_url).render_as_string(hide_password=True)
    return hashlib.sha256(shown.encode()).hexdigest()[:16]
