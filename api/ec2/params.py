"""The parameters of an EC2 Query API request: ``Name=value`` pairs from the query string
and the form body, with lists as ``Name.N``, filters as ``Filter.N.Name`` /
``Filter.N.Value.M`` and tags as ``Tag.N.Key`` / ``Tag.N.Value``.

An action reads what it takes through a ``Params`` and then calls ``finish()``: a
parameter it never read is ``UnknownParameter`` (as EC2 answers), and ``DryRun=true``
stops the request there with ``DryRunOperation``, before anything is done."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from computed.errors import InvalidParameterValue, MissingParameter

from .errors import DryRunOperation, MalformedQueryString, UnknownParameter

#: read by the dispatcher or by authentication (presigned URLs), never UnknownParameter
ENVELOPE = frozenset({"Action", "Version", "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                      "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Security-Token"})
#: a list index: 1, 2, ... (no sign, no leading zero)
_INDEX_RE = re.compile("[1-9][0-9]{0,5}")
MAX_FIELDS = 10000


def parse_pairs(data: bytes, limit: int = MAX_FIELDS) -> list[tuple[str, str]]:
    """NAME=VALUE pairs of a query string or form body, blank values kept; the bytes must
    be UTF-8 once percent-decoded, and hold at most LIMIT pairs."""
    try:
        text = data.decode("utf-8")
        return parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict",
                         max_num_fields=limit)
    except UnicodeDecodeError:
        raise MalformedQueryString("the request's parameters are not UTF-8") from None
    except ValueError:
        raise MalformedQueryString(f"the request has more than {MAX_FIELDS} parameters "
                                   "(the query string and the body together)") from None


def parse_request(query: bytes, body: bytes) -> list[tuple[str, str]]:
    """The pairs of the query string, then of the form body: at most MAX_FIELDS in all."""
    pairs = parse_pairs(query)
    if body:
        pairs += parse_pairs(body, MAX_FIELDS - len(pairs))
    return pairs


#: list prefixes are looked up at most this deep: ``TagSpecification.N.Tag.M.Key`` has
#: its last index in the fourth dot-separated part
_LIST_DEPTH = 5


class _ListIndex:
    """For each list prefix (``Filter``, ``Filter.3.Value``, ``InstanceId``, ...): the indices
    N that follow it in some parameter name, each with what follows ``PREFIX.N`` (None when
    nothing does, else the rest of the name after the dot). Built in one pass over the
    names, so that every list an action reads is found without rescanning them all."""

    def __init__(self, names: Iterable[str]):
        self._lists: dict[str, dict[int, set[str | None]]] = {}
        for name in names:
            parts = name.split(".", _LIST_DEPTH)
            start = 0  # where parts[i] begins in name
            for i, part in enumerate(parts[:_LIST_DEPTH]):
                if i and _INDEX_RE.fullmatch(part):
                    end = start + len(part)
                    rest = name[end + 1:] if end < len(name) else None
                    self._lists.setdefault(name[:start - 1], {}).setdefault(int(part), set()).add(rest)
                start += len(part) + 1

    def exact(self, prefix: str) -> list[int]:
        """The N of every ``PREFIX.N`` parameter, in order."""
        return sorted(n for n, rests in self._lists.get(prefix, {}).items() if None in rests)

    def followed(self, prefix: str, by: Collection[str] | None = None) -> list[int]:
        """The N of every ``PREFIX.N.REST`` parameter (REST one of BY, if given), in order."""
        return sorted(n for n, rests in self._lists.get(prefix, {}).items()
                      if any(r is not None and (by is None or r in by) for r in rests))


@dataclass(frozen=True)
class Filter:
    name: str
    values: tuple[str, ...]


class Params:
    def __init__(self, pairs: Iterable[tuple[str, str]]):
        self._values: dict[str, str] = {}
        for name, value in pairs:
            if "\x00" in name or "\x00" in value:  # no value takes one, and PostgreSQL can store none
                raise InvalidParameterValue(f"the parameter {name.replace(chr(0), '%00')} contains a NUL character")
            if name in self._values:
                raise InvalidParameterValue(f"the parameter {name} is given more than once")
            self._values[name] = value
        self._lists = _ListIndex(self._values)
        self._read: set[str] = set()
        self.dry_run = False
        self.finished = False

    def __contains__(self, name: str) -> bool:
        return name in self._values

    # -- single values -----------------------------------------------------------------

    def raw(self, name: str) -> str | None:
        self._read.add(name)
        return self._values.get(name)

    def string(self, name: str, required: bool = False) -> str | None:
        value = self.raw(name)
        if value is None and required:
            raise MissingParameter(f"The request must contain the parameter {name}")
        return value

    def integer(self, name: str, required: bool = False, minimum: int | None = None,
                maximum: int | None = None) -> int | None:
        value = self.string(name, required)
        if value is None:
            return None
        if not re.fullmatch(r"-?[0-9]{1,18}", value.strip()):
            raise InvalidParameterValue(f"Invalid value {value!r} for {name}: it must be a whole number")
        number = int(value)
        if minimum is not None and number < minimum or maximum is not None and number > maximum:
            bounds = (f"between {minimum} and {maximum}" if minimum is not None and maximum is not None
                      else f"at least {minimum}" if minimum is not None else f"at most {maximum}")
            raise InvalidParameterValue(f"Invalid value {number} for {name}: it must be {bounds}")
        return number

    def boolean(self, name: str, default: bool = False) -> bool:
        value = self.string(name)
        if value is None:
            return default
        lowered = value.strip().lower()
        if lowered not in ("true", "false"):
            raise InvalidParameterValue(f"Invalid value {value!r} for {name}: it must be true or false")
        return lowered == "true"

    def base64(self, name: str, required: bool = False) -> bytes | None:
        value = self.string(name, required)
        if value is None:
            return None
        try:
            return base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidParameterValue(f"Invalid value for {name}: it must be base64 encoded") from None

    def choice(self, name: str, allowed: Collection[str], default: str | None = None) -> str | None:
        value = self.string(name)
        if value is None:
            return default
        if value not in allowed:
            raise InvalidParameterValue(f"Invalid value {value!r} for {name}: it must be one of "
                                        f"{', '.join(sorted(allowed))}")
        return value

    # -- lists -------------------------------------------------------------------------

    def strings(self, prefix: str, required: bool = False) -> list[str]:
        """PREFIX.1, PREFIX.2, ... in index order, duplicates dropped."""
        values = []
        for n in self._lists.exact(prefix):
            values.append(self.raw(f"{prefix}.{n}"))
        if required and not values:
            raise MissingParameter(f"The request must contain the parameter {prefix}.1")
        return list(dict.fromkeys(values))

    def filters(self, allowed: Collection[str], prefixes: Collection[str] = ()) -> dict[str, tuple[str, ...]]:
        """Filter.N.Name / Filter.N.Value.M as {name: values}; a name given in two filters
        has the values of both. A name not in ALLOWED nor starting with one of PREFIXES
        (like ``tag:``) is InvalidParameterValue."""
        out: dict[str, dict[str, None]] = {}  # each name's values, in order, each once
        for n in self._lists.followed("Filter"):
            name = self.raw(f"Filter.{n}.Name")
            values = tuple(self.raw(f"Filter.{n}.Value.{m}") for m in self._lists.exact(f"Filter.{n}.Value"))
            if name is None:
                raise MissingParameter(f"The request must contain the parameter Filter.{n}.Name")
            if name not in allowed and not any(name.startswith(p) and len(name) > len(p) for p in prefixes):
                known = ", ".join(sorted(allowed) + [f"{p}<key>" for p in sorted(prefixes)])
                raise InvalidParameterValue(f"The filter '{name}' is invalid (filters: {known})")
            if not values:
                raise InvalidParameterValue(f"The filter '{name}' needs at least one value (Filter.{n}.Value.1)")
            out.setdefault(name, {}).update(dict.fromkeys(values))
        return {name: tuple(values) for name, values in out.items()}

    def tags(self, prefix: str = "Tag", value_required: bool = True) -> dict[str, str | None]:
        """PREFIX.N.Key / PREFIX.N.Value as {key: value}. A missing value is "" (as EC2's
        CreateTags), or None when VALUE_REQUIRED is false (DeleteTags: whatever the value)."""
        tags: dict[str, str | None] = {}
        for n in self._lists.followed(prefix, by=("Key", "Value")):
            key = self.raw(f"{prefix}.{n}.Key")
            value = self.raw(f"{prefix}.{n}.Value")
            if key is None:
                raise MissingParameter(f"The request must contain the parameter {prefix}.{n}.Key")
            if key in tags:
                raise InvalidParameterValue(f"The tag key {key!r} is given more than once")
            tags[key] = value if value is not None or not value_required else ""
        return tags

    def tag_specifications(self, resource_types: Collection[str]) -> dict[str, dict[str, str]]:
        """TagSpecification.N.ResourceType and .Tag.M.Key/.Value as {resource type: tags}."""
        out: dict[str, dict[str, str]] = {}
        for n in self._lists.followed("TagSpecification"):
            kind = self.raw(f"TagSpecification.{n}.ResourceType")
            tags = self.tags(f"TagSpecification.{n}.Tag")
            if kind is None:
                raise MissingParameter(f"The request must contain the parameter TagSpecification.{n}.ResourceType")
            if kind not in resource_types:
                raise InvalidParameterValue(f"Invalid value {kind!r} for TagSpecification.{n}.ResourceType: "
                                            f"tags can be given here for {', '.join(sorted(resource_types))}")
            if kind in out:
                raise InvalidParameterValue(f"The resource type {kind!r} is given in more than one TagSpecification")
            out[kind] = tags
        return out

    # -- the end of parsing ------------------------------------------------------------

    def check_unknown(self) -> None:
        unknown = sorted(set(self._values) - self._read - ENVELOPE)
        if unknown:
            raise UnknownParameter(f"The parameter {unknown[0]} is not recognized")

    def finish(self) -> None:
        """Every parameter was read (else UnknownParameter); a dry run ends here."""
        self.check_unknown()
        self.finished = True
        if self.dry_run:
            raise DryRunOperation()
