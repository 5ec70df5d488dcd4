"""Paging and filtering of the short lists this layer gets whole from the core (sizes,
images, key pairs, tags): ``MaxResults`` / ``NextToken`` over an offset, and EC2's filter
values with ``*`` and ``?`` wildcards. Instances are paged and filtered by the core."""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
from collections.abc import Iterable, Sequence

from computed.errors import InvalidParameterValue

MAX_OFFSET = 1 << 40


def matches(value, patterns: Iterable[str] | None) -> bool:
    """Whether VALUE matches one of PATTERNS (None: no filter)."""
    if patterns is None:
        return True
    text = value if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)
    return any(fnmatch.fnmatchcase(text, p) for p in patterns)


def _encode(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")


def _decode(token: str) -> int:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        offset = data["o"]
        if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= MAX_OFFSET:
            raise ValueError
        return offset
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidParameterValue("The NextToken is not one this service gave out") from None


def page(items: Sequence, max_results: int | None, token: str | None) -> tuple[list, str | None]:
    offset = _decode(token) if token else 0
    if max_results is None:
        return list(items[offset:]), None
    end = offset + max_results
    return list(items[offset:end]), _encode(end) if end < len(items) else None
