"""Paging and filtering of the short lists this layer gets whole from the core (sizes,
images, key pairs, tags): ``MaxResults`` / ``NextToken`` over an offset, and EC2's filter
values with ``*`` and ``?`` wildcards. Instances are paged and filtered by the core."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence

from computed.store import page_token


def matches(value, patterns: Iterable[str] | None) -> bool:
    """Whether VALUE matches one of PATTERNS (None: no filter)."""
    if patterns is None:
        return True
    text = value if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)
    return any(fnmatch.fnmatchcase(text, p) for p in patterns)


def page(items: Sequence, max_results: int | None, token: str | None) -> tuple[list, str | None]:
    offset = page_token.decode(token, "The NextToken")
    if max_results is None:
        return list(items[offset:]), None
    end = offset + max_results
    return list(items[offset:end]), page_token.encode(end) if end < len(items) else None
