"""Verify AWS Signature Version 4 (SigV4) signed requests, server side.

Accepts what boto3 and the AWS CLI send to non-S3 services: header auth
(``Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``
with ``X-Amz-Date`` or ``Date``) and presigned query strings (``X-Amz-Algorithm``,
``X-Amz-Credential``, ``X-Amz-Date``, ``X-Amz-Expires``, ``X-Amz-SignedHeaders``,
``X-Amz-Signature``). Framework-independent: pure functions over the parts of a request.

The canonical request is built the way botocore's ``SigV4Auth`` builds it:

* URI: the path *as received on the wire* (still percent-encoded; see ``wsgi_path``),
  with empty segments dropped, then encoded again with ``quote(safe='/~')``
  (non-S3 services sign a double-encoded path). Literal ``.``/``..`` segments are refused.
* query: decoded (key, value) pairs, each re-encoded with ``quote(safe='-_.~')``, sorted;
  ``X-Amz-Signature`` is left out for presigned requests.
* headers: the ``SignedHeaders`` (lowercase, sorted, must include ``host``), values
  trimmed with inner whitespace runs collapsed.
* payload: ``X-Amz-Content-SHA256`` if sent (it must equal sha256(body), or be
  ``UNSIGNED-PAYLOAD`` when allowed), else sha256(body) -- for presigned requests too,
  as botocore's ``SigV4QueryAuth`` does for non-S3 services.

Session tokens (``X-Amz-Security-Token``) are refused: this service issues none.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qsl, quote

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
MAX_PRESIGN_EXPIRES = 7 * 24 * 3600  # seconds, as in AWS
_TIMESTAMP = "%Y%m%dT%H%M%SZ"
_TIMESTAMP_RE = re.compile(r"\d{8}T\d{6}Z")
_SIGNATURE_RE = re.compile(r"[0-9a-f]{64}")
_QUERY_AUTH = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
               "X-Amz-SignedHeaders", "X-Amz-Signature")
_HEADER_AUTH = ("Credential", "SignedHeaders", "Signature")


class SignatureError(Exception):
    """The request is not validly signed. The message says why, for logs only: the HTTP
    answer must not tell the client which part failed."""


@dataclass(frozen=True)
class SignedRequest:
    """Who signed a verified request, and for what."""

    access_key_id: str
    region: str
    service: str
    signed_at: datetime  # aware, UTC
    presigned: bool


def is_signed(headers: Mapping[str, str], query: list[tuple[str, str]]) -> bool:
    """Whether the request claims AWS authentication (an ``Authorization: AWS...`` header
    or SigV4 query parameters), so that it must be checked with ``verify``."""
    return (any(k.lower() == "authorization" and v.lstrip().startswith("AWS")
                for k, v in headers.items())
            or any(k in ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature")
                   for k, _ in query))


def parse_query(raw: bytes | str) -> list[tuple[str, str]]:
    """The decoded (key, value) pairs of a raw query string, in order, repeats and blank
    values kept -- the ``query`` argument of ``verify`` (``+`` is a space, as in Flask)."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    return parse_qsl(raw, keep_blank_values=True)


def wsgi_path(environ: Mapping[str, object]) -> str:
    """The request path as the client sent it (percent-encoded, without the query) from
    a WSGI environ: ``RAW_URI`` (gunicorn, werkzeug) or ``REQUEST_URI`` (waitress, werkzeug),
    else SCRIPT_NAME + PATH_INFO re-encoded (exact for clients that encode like botocore)."""
    uri = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if isinstance(uri, str) and uri.startswith("/"):
        return uri.partition("?")[0].partition("#")[0].encode("latin-1").decode("utf-8", "replace")
    path = f"{environ.get('SCRIPT_NAME', '')}{environ.get('PATH_INFO', '')}"
    return quote(path.encode("latin-1"), safe="/~")


def verify(method: str, path: str, query: list[tuple[str, str]], headers: Mapping[str, str],
           body: bytes, *, secret_for: Callable[[str], str | None], region: str,
           services: Collection[str], now: datetime, max_skew: timedelta = timedelta(minutes=15),
           allow_unsigned_payload: bool = False) -> SignedRequest:
    """Check the SigV4 signature of a request; return who signed it or raise SignatureError.

    ``path`` is the raw (still percent-encoded) path, ``query`` the decoded pairs (see
    ``parse_query``), ``headers`` any mapping (looked up case-insensitively), ``body`` the raw
    body bytes. ``secret_for(access_key_id)`` returns the secret key, or None if unknown.
    The credential scope must name ``region`` and one of ``services``. ``now`` is the current
    time (aware; naive means UTC)."""
    try:
        return _verify(method, path, query, headers, body, secret_for, region, services,
                       now, max_skew, allow_unsigned_payload)
    except (ValueError, OverflowError) as exc:  # undecodable text, impossible dates, ...
        raise SignatureError(f"malformed request: {exc!r}") from None


def _verify(method, path, query, headers, body, secret_for, region, services, now, max_skew,
            allow_unsigned_payload) -> SignedRequest:
    hdrs: dict[str, str] = {}
    for name, value in headers.items():
        name = name.lower()
        hdrs[name] = f"{hdrs[name]},{value}" if name in hdrs else value
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    presigned = any(k == "X-Amz-Signature" for k, _ in query)
    if "x-amz-security-token" in hdrs or any(k == "X-Amz-Security-Token" for k, _ in query):
        raise SignatureError("session tokens are not supported")
    if presigned:
        if "authorization" in hdrs:
            raise SignatureError("both an Authorization header and a presigned query")
        auth = {}
        for name in _QUERY_AUTH:
            values = [v for k, v in query if k == name]
            if len(values) != 1:
                raise SignatureError(f"{len(values)} {name} query parameters")
            auth[name] = values[0]
        algorithm, credential, stamp, expires, signed_headers, signature = (
            auth[name] for name in _QUERY_AUTH)
        if not (expires.isascii() and expires.isdigit()
                and 1 <= int(expires) <= MAX_PRESIGN_EXPIRES):
            raise SignatureError(f"bad X-Amz-Expires {expires!r}")
    else:
        if "authorization" not in hdrs:
            raise SignatureError("no Authorization header")
        algorithm, _, rest = hdrs["authorization"].strip().partition(" ")
        fields = [part.strip().partition("=") for part in rest.split(",")]
        if sorted(key for key, _, _ in fields) != sorted(_HEADER_AUTH):
            raise SignatureError("Authorization header needs Credential, SignedHeaders, Signature")
        auth = {key: value for key, _, value in fields}
        credential, signed_headers, signature = (auth[key] for key in _HEADER_AUTH)
        stamp = hdrs.get("x-amz-date")
        if stamp is None:
            if "date" not in hdrs:
                raise SignatureError("neither X-Amz-Date nor Date header")
            try:
                date = parsedate_to_datetime(hdrs["date"])
            except TypeError:  # parsedate_to_datetime's answer to some garbage
                raise SignatureError(f"bad Date header {hdrs['date']!r}") from None
            stamp = (date.astimezone(UTC) if date.tzinfo else date).strftime(_TIMESTAMP)
    if algorithm != ALGORITHM:
        raise SignatureError(f"unsupported algorithm {algorithm!r}")
    if not _TIMESTAMP_RE.fullmatch(stamp):
        raise SignatureError(f"bad request date {stamp!r}")
    signed_at = datetime.strptime(stamp, _TIMESTAMP).replace(tzinfo=UTC)
    scope = credential.split("/")
    if len(scope) != 5 or not scope[0] or scope[4] != "aws4_request":
        raise SignatureError(f"malformed credential {credential!r}")
    key_id, day, scope_region, service, _ = scope
    if day != stamp[:8]:
        raise SignatureError(f"credential date {day!r} is not the request date {stamp!r}")
    if scope_region != region:
        raise SignatureError(f"wrong region {scope_region!r}")
    if service not in services:
        raise SignatureError(f"wrong service {service!r}")
    if not _SIGNATURE_RE.fullmatch(signature):
        raise SignatureError("signature is not 64 lowercase hex digits")
    names = signed_headers.split(";")
    if names != sorted(set(names)) or not all(n and n == n.lower() for n in names):
        raise SignatureError(f"SignedHeaders not lowercase, sorted and unique: {signed_headers!r}")
    if "host" not in names:
        raise SignatureError("the Host header is not signed")
    if missing := [n for n in names if n not in hdrs]:
        raise SignatureError(f"signed headers missing from the request: {missing}")
    if presigned:
        if signed_at - now > max_skew:
            raise SignatureError(f"presigned in the future: {stamp}")
        if now - signed_at > timedelta(seconds=int(expires)):
            raise SignatureError(f"presigned URL expired: {stamp} + {expires}s")
    elif abs(now - signed_at) > max_skew:
        raise SignatureError(f"request date {stamp} too far from now {now:{_TIMESTAMP}}")
    payload = hdrs.get("x-amz-content-sha256")
    body_hash = hashlib.sha256(body).hexdigest()
    if payload is None:
        payload = body_hash
    elif payload != body_hash and not (allow_unsigned_payload and payload == UNSIGNED_PAYLOAD):
        raise SignatureError("X-Amz-Content-SHA256 does not match the body")
    canonical = "\n".join([
        method.upper(),
        _canonical_uri(path),
        "&".join(f"{k}={v}" for k, v in sorted(
            (quote(k, safe="-_.~"), quote(v, safe="-_.~"))
            for k, v in query if k != "X-Amz-Signature")),
        "".join(f"{n}:{' '.join(hdrs[n].split())}\n" for n in names),
        signed_headers,
        payload,
    ])
    credential_scope = f"{day}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join([ALGORITHM, stamp, credential_scope,
                                hashlib.sha256(canonical.encode()).hexdigest()])
    secret = secret_for(key_id)
    # An unknown key still costs a full computation, so timing does not tell keys apart.
    key = f"AWS4{secret if secret is not None else 'unknown-key'}".encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature) or secret is None:
        raise SignatureError(f"bad signature for {key_id!r}" if secret is not None
                             else f"unknown access key {key_id!r}")
    return SignedRequest(key_id, region, service, signed_at, presigned)


def _canonical_uri(path: str) -> str:
    """botocore's ``quote(normalize_url_path(path), safe='/~')``, refusing dot segments."""
    segments = path.split("/")
    if "." in segments or ".." in segments:
        raise SignatureError(f"path with dot segments {path!r}")
    kept = [s for s in segments if s]
    first = "/" if path.startswith("/") or not path else ""
    last = "/" if kept and path.endswith("/") else ""
    return quote(first + "/".join(kept) + last, safe="/~")
