"""The opaque ``next_token`` of a paged listing: an offset, encoded so that clients treat it
as a token, and checked when it comes back. The REST API's ``next_token`` and the EC2
API's ``NextToken`` are the same thing."""

from __future__ import annotations

import base64
import json

from computed.errors import InvalidParameterValue

MAX_OFFSET = 1 << 40


def encode(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")


def decode(token: str | None, name: str = "next_token") -> int:
    """The offset TOKEN stands for (0 for none); InvalidParameterValue naming the parameter
    NAME if it is not a token this service gave out."""
    if not token:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        offset = data["o"]
        if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= MAX_OFFSET:
            raise ValueError
        return offset
    except (ValueError, KeyError, TypeError):  # binascii.Error and JSON errors are ValueErrors
        raise InvalidParameterValue(f"{name} is not one this service gave out") from None
