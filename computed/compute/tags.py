"""The rules of an instance's tags: how many, which keys and values, and the prefixes only
the service sets. Launches and ``Instances.create_tags`` check tags with ``check_tags``."""

from __future__ import annotations

import re

from computed.errors import InvalidParameterValue

MAX_TAGS = 50
TAG_KEY = re.compile(r"[^\x00-\x1f\x7f-\x9f]{1,128}")
TAG_VALUE = re.compile(r"[^\x00-\x1f\x7f-\x9f]{0,256}")
#: tag keys only the service sets (like AWS's aws: tags: listed, not editable)
RESERVED_TAG_PREFIXES = ("aws:", "computed:")


def check_tags(tags: dict[str, str]) -> dict[str, str]:
    if len(tags) > MAX_TAGS:
        raise InvalidParameterValue(f"at most {MAX_TAGS} tags per instance")
    for key, value in tags.items():
        if not isinstance(key, str) or not TAG_KEY.fullmatch(key) or key.lower().startswith(RESERVED_TAG_PREFIXES):
            raise InvalidParameterValue(f"tag key {key!r}: 1 to 128 characters, no control characters, "
                                        "not starting with 'aws:' or 'computed:' (reserved)")
        if not isinstance(value, str) or not TAG_VALUE.fullmatch(value):
            raise InvalidParameterValue(f"tag {key!r}: the value is at most 256 characters, no control characters")
    return tags
