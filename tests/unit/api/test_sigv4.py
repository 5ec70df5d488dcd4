"""api.sigv4 verifies requests signed by botocore itself (SigV4Auth, SigV4QueryAuth, boto3)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta
from unittest import mock
from urllib.parse import quote, urlsplit

import boto3
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from api.sigv4 import (
    SignatureError,
    SignedRequest,
    is_signed,
    parse_query,
    verify,
    wsgi_path,
)

KEY_ID, SECRET = "AKIACOMPUTEDTEST0001", "s3cr3t/Key+ForTests"
REGION, SERVICES = "computed-1", ("ec2", "computed")
CREDS = Credentials(KEY_ID, SECRET)
NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
BASE = "http://127.0.0.1:8080"
FORM = "application/x-www-form-urlencoded; charset=utf-8"
INSTANCE = "i-0123456789abcdef0"


@dataclasses.dataclass(frozen=True)
class Parts:
    """A request as the server sees it."""

    method: str
    path: str
    query: list
    headers: dict
    body: bytes


def to_parts(method: str, url: str, headers, body) -> Parts:
    """What the server receives for a request botocore prepared (the HTTP client adds Host)."""
    url = urlsplit(url)
    headers = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in headers.items()}
    if not any(k.lower() == "host" for k in headers):
        headers["Host"] = url.netloc
    if isinstance(body, str):
        body = body.encode()
    return Parts(method, url.path, parse_query(url.query), headers, body or b"")


def sign(method: str = "GET", url: str = BASE + "/v1/instances", *, data: bytes = b"",
         headers: dict | None = None, params=None, at: datetime = NOW,
         creds: Credentials = CREDS, service: str = "ec2",
         region: str = REGION, expires: int | None = None, signer_class=None) -> Parts:
    """Sign with botocore at time AT (header auth, or presigned if EXPIRES is given)."""
    request = AWSRequest(method=method, url=url, data=data, headers=headers or {},
                         params=params or {})
    if signer_class is not None:
        signer = signer_class(creds, service, region)
    elif expires is None:
        signer = SigV4Auth(creds, service, region)
    else:
        signer = SigV4QueryAuth(creds, service, region, expires=expires)
    with mock.patch("botocore.auth.get_current_datetime", return_value=at.replace(tzinfo=None)):
        signer.add_auth(request)
    prepared = request.prepare()
    return to_parts(prepared.method, prepared.url, prepared.headers, prepared.body)


def check(parts: Parts, *, now: datetime = NOW, secrets: dict | None = None,
          region: str = REGION, services=SERVICES, **kwargs) -> SignedRequest:
    secrets = {KEY_ID: SECRET} if secrets is None else secrets
    return verify(parts.method, parts.path, parts.query, parts.headers, parts.body,
                  secret_for=secrets.get, region=region, services=services, now=now, **kwargs)


def rejects(parts: Parts, **kwargs) -> str:
    with pytest.raises(SignatureError) as info:
        check(parts, **kwargs)
    return str(info.value)


def with_header(parts: Parts, name: str, value: str | None) -> Parts:
    headers = {k: v for k, v in parts.headers.items() if k.lower() != name.lower()}
    if value is not None:
        headers[name] = value
    return dataclasses.replace(parts, headers=headers)


def with_query(parts: Parts, name: str, value: str | None) -> Parts:
    query = [(k, v) for k, v in parts.query if k != name]
    if value is not None:
        query.append((name, value))
    return dataclasses.replace(parts, query=query)


# ---------------------------------------------------------------- accepted requests

def test_get_with_query_in_url():
    parts = sign("GET", BASE + "/v1/instances?state=running&limit=10")
    assert parts.query == [("state", "running"), ("limit", "10")]
    assert is_signed(parts.headers, parts.query)
    assert check(parts) == SignedRequest(KEY_ID, REGION, "ec2", NOW, presigned=False)


def test_get_with_params_and_repeated_keys():
    parts = sign("GET", params=[("tag", "b"), ("tag", "a"), ("x", "sp ace+plus/é"), ("e", "")])
    assert parts.query.count(("x", "sp ace+plus/é")) == 1 and ("e", "") in parts.query
    assert check(parts).access_key_id == KEY_ID
    # order of the pairs as received does not matter, the values do
    assert check(dataclasses.replace(parts, query=list(reversed(parts.query))))
    tampered = [(k, "c" if (k, v) == ("tag", "a") else v) for k, v in parts.query]
    rejects(dataclasses.replace(parts, query=tampered))


def test_post_form_body_like_ec2():
    body = b"Action=DescribeInstances&Version=2016-11-15&InstanceId.1=" + INSTANCE.encode()
    parts = sign("POST", BASE + "/", data=body, headers={"Content-Type": FORM})
    assert check(parts).service == "ec2"


def test_post_json_to_instance_action_path():
    body = json.dumps({"force": True}).encode()
    parts = sign("POST", f"{BASE}/v1/instances/{INSTANCE}/stop", data=body,
                 headers={"Content-Type": "application/json"}, service="computed")
    assert check(parts).service == "computed"


def test_content_sha256_header_is_checked():
    body = b'{"a": 1}'
    parts = sign("PUT", BASE + "/v1/x", data=body,
                 headers={"X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()})
    assert check(parts)
    rejects(dataclasses.replace(parts, body=b'{"a": 2}'))


def test_unsigned_payload_only_when_allowed():
    parts = sign("POST", BASE + "/v1/x", data=b"abc",
                 headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    assert "does not match the body" in rejects(parts)
    assert check(parts, allow_unsigned_payload=True)
    assert check(dataclasses.replace(parts, body=b"other"), allow_unsigned_payload=True)


@pytest.mark.parametrize("segment",
                         ["a b", "caf\u00e9", "x:y@z", "100%", "a+b", "~tilde", "*!'()", "%2F"])
def test_paths_needing_encoding(segment):
    # botocore's serializers percent-encode path labels; the server passes the raw path.
    url = f"{BASE}/v1/images/{quote(segment, safe='~')}/meta"
    parts = sign("GET", url)
    assert check(parts)
    other = quote(segment + "x", safe="~")
    rejects(dataclasses.replace(parts, path=f"/v1/images/{other}/meta"))


def test_empty_path_segments_are_dropped_like_botocore():
    parts = sign("GET", BASE + "/v1//instances/")
    assert parts.path == "/v1//instances/"
    assert check(parts)
    assert check(dataclasses.replace(parts, path="/v1/instances/"))  # same canonical URI


def test_dot_segments_refused():
    parts = sign("GET", BASE + "/v1/instances")
    assert "dot segments" in rejects(dataclasses.replace(parts, path="/v1/x/../instances"))


def test_date_header_instead_of_x_amz_date():
    parts = sign("GET", headers={"Date": "Wed, 25 Nov 2026 11:00:00 GMT"})
    assert not any(k.lower() == "x-amz-date" for k in parts.headers)
    assert check(parts).signed_at == NOW
    rejects(parts, now=NOW + timedelta(minutes=16))


def test_unsigned_extra_header_does_not_matter_signed_one_does():
    parts = sign("POST", BASE + "/", data=b"Action=X", headers={"Content-Type": FORM})
    assert check(with_header(parts, "User-Agent", "something else"))
    rejects(with_header(parts, "Content-Type", "application/json"))


def test_header_names_case_insensitive_and_values_trimmed():
    parts = sign("GET", headers={"X-Custom": "a   b"})
    headers = {k.upper(): v for k, v in parts.headers.items()}
    headers["X-CUSTOM"] = "  a b "
    assert check(dataclasses.replace(parts, headers=headers))


def test_skew_limits():
    parts = sign("GET", at=NOW)
    for minutes in (-14, 14, 15, -15):
        assert check(parts, now=NOW + timedelta(minutes=minutes))
    for minutes in (16, -16):
        assert "too far" in rejects(parts, now=NOW + timedelta(minutes=minutes))
    assert check(parts, now=NOW + timedelta(minutes=16), max_skew=timedelta(minutes=20))


def test_naive_now_is_utc():
    assert check(sign(), now=NOW.replace(tzinfo=None))


def test_presigned_get():
    parts = sign("GET", BASE + "/v1/instances?state=running", expires=300)
    assert {"X-Amz-Signature", "X-Amz-Expires", "state"} <= {k for k, _ in parts.query}
    assert not any(k.lower() == "authorization" for k in parts.headers)
    assert is_signed(parts.headers, parts.query)
    assert check(parts) == SignedRequest(KEY_ID, REGION, "ec2", NOW, presigned=True)
    assert check(parts, now=NOW + timedelta(seconds=300))
    assert "expired" in rejects(parts, now=NOW + timedelta(seconds=301))
    assert check(parts, now=NOW - timedelta(minutes=15))
    assert "future" in rejects(parts, now=NOW - timedelta(minutes=16))
    rejects(with_query(parts, "state", "stopped"))
    rejects(with_query(parts, "X-Amz-Expires", "3600"))


def test_presigned_expiry_limits():
    week = 7 * 24 * 3600
    parts = sign("GET", expires=week)
    assert check(parts, now=NOW + timedelta(seconds=week))
    assert "X-Amz-Expires" in rejects(sign("GET", expires=week + 1))
    for bad in ("0", "-5", "abc", "", "1e3", "\u0661"):
        assert "X-Amz-Expires" in rejects(with_query(parts, "X-Amz-Expires", bad))


def test_presigned_missing_or_repeated_params():
    parts = sign("GET", expires=60)
    for name in ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                 "X-Amz-SignedHeaders"):
        rejects(with_query(parts, name, None))
    sig = dict(parts.query)["X-Amz-Signature"]
    rejects(dataclasses.replace(parts, query=parts.query + [("X-Amz-Signature", sig)]))
    both = with_header(parts, "Authorization", "AWS4-HMAC-SHA256 Credential=x")
    assert "both" in rejects(both)


# ---------------------------------------------------------------- rejected requests

def test_wrong_secret_and_unknown_key():
    parts = sign("GET", creds=Credentials(KEY_ID, "not-the-secret"))
    assert "bad signature" in rejects(parts)
    assert "unknown access key" in rejects(sign("GET"), secrets={})
    assert "unknown access key" in rejects(sign("GET"), secrets={"OTHER": SECRET})
    # the stand-in secret used to keep timing even is no way in
    assert "unknown access key" in rejects(sign("GET", creds=Credentials("NOPE", "unknown-key")))


def test_tampering():
    parts = sign("POST", f"{BASE}/v1/instances/{INSTANCE}/stop?dry=1", data=b'{"force": false}',
                 headers={"Content-Type": "application/json"})
    assert check(parts)
    rejects(dataclasses.replace(parts, body=b'{"force": true}'))
    rejects(dataclasses.replace(parts, method="PUT"))
    rejects(dataclasses.replace(parts, path=parts.path.replace("stop", "start")))
    rejects(dataclasses.replace(parts, path=parts.path.replace(INSTANCE, "i-0000000000000000f")))
    rejects(with_query(parts, "dry", "0"))
    rejects(with_query(parts, "extra", "1"))
    rejects(with_header(parts, "Host", "evil.example:8080"))
    date = parts.headers["X-Amz-Date"]
    rejects(with_header(parts, "X-Amz-Date", date[:-3] + "01Z"))
    auth = parts.headers["Authorization"]
    flipped = auth[:-1] + ("0" if auth[-1] != "0" else "1")
    assert "bad signature" in rejects(with_header(parts, "Authorization", flipped))


def test_wrong_region_and_service():
    assert "region" in rejects(sign("GET", region="us-east-1"))
    assert "service" in rejects(sign("GET", service="s3"))
    assert "service" in rejects(sign("GET", service="computed"), services={"ec2"})
    assert "region" in rejects(sign("GET"), region="computed-2")


class NoHostSigV4Auth(SigV4Auth):
    def headers_to_sign(self, request):
        headers = super().headers_to_sign(request)
        del headers["host"]
        return headers


def test_host_must_be_signed():
    parts = sign("GET", signer_class=NoHostSigV4Auth)
    assert "SignedHeaders=x-amz-date," in parts.headers["Authorization"]
    assert "Host" in rejects(parts)


def test_signed_header_missing_from_request():
    parts = sign("POST", BASE + "/", data=b"A=1", headers={"Content-Type": FORM})
    assert "missing" in rejects(with_header(parts, "Content-Type", None))


def test_missing_pieces():
    parts = sign("GET")
    assert not is_signed(with_header(parts, "Authorization", None).headers, [])
    assert "no Authorization" in rejects(with_header(parts, "Authorization", None))
    assert "X-Amz-Date" in rejects(with_header(parts, "X-Amz-Date", None))
    auth = parts.headers["Authorization"]
    without_signature = auth.rsplit(",", 1)[0]
    rejects(with_header(parts, "Authorization", without_signature))


def test_scope_date_must_match_request_date():
    parts = sign("GET")
    auth = parts.headers["Authorization"].replace("/20261125/", "/20261124/")
    assert "credential date" in rejects(with_header(parts, "Authorization", auth))


def test_session_token_refused():
    parts = sign("GET", creds=Credentials(KEY_ID, SECRET, token="tok"))
    assert "session token" in rejects(parts)
    presigned = sign("GET", creds=Credentials(KEY_ID, SECRET, token="tok"), expires=60)
    assert "session token" in rejects(presigned)


GOOD_AUTH = (f"AWS4-HMAC-SHA256 Credential={KEY_ID}/20261125/{REGION}/ec2/aws4_request, "
             f"SignedHeaders=host;x-amz-date, Signature={'a' * 64}")


@pytest.mark.parametrize("auth", [
    "", "AWS4-HMAC-SHA256", "AWS4-HMAC-SHA256 ", "Bearer abc", "AWS AKID:sig",
    GOOD_AUTH.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512"),
    GOOD_AUTH.replace("a" * 64, "A" * 64), GOOD_AUTH.replace("a" * 64, "a" * 63),
    GOOD_AUTH.replace("a" * 64, "\u00e9" * 64), GOOD_AUTH.replace("/aws4_request", "/aws5"),
    GOOD_AUTH.replace(f"{KEY_ID}/", ""), GOOD_AUTH.replace(KEY_ID, ""),
    GOOD_AUTH.replace("host;x-amz-date", "x-amz-date;host"),
    GOOD_AUTH.replace("host;x-amz-date", "Host;x-amz-date"),
    GOOD_AUTH.replace("host;x-amz-date", "host;host;x-amz-date"),
    GOOD_AUTH.replace("host;x-amz-date", "host;;x-amz-date"),
    GOOD_AUTH + ", Signature=" + "b" * 64, GOOD_AUTH.replace(", SignedHeaders", ", Foo"),
    GOOD_AUTH.replace("Credential=", "Credential ="), GOOD_AUTH.replace("20261125", "2026112"),
    GOOD_AUTH.replace(",", ""),
])
def test_garbage_authorization_headers(auth):
    parts = with_header(sign("GET"), "Authorization", auth)
    rejects(parts)


@pytest.mark.parametrize("date", ["", "20261125T120000", "2026-11-25T12:00:00Z", "20261325T120000Z",
                                  "20261125T250000Z", "\u0662" * 8 + "T120000Z"])
def test_garbage_dates(date):
    rejects(with_header(sign("GET"), "X-Amz-Date", date))


@pytest.mark.parametrize("date", ["", "yesterday", "Wed, 99 Nov 2026 11:00:00 GMT",
                                  "Wed, 25 Nov 99999 11:00:00 GMT"])
def test_garbage_date_header(date):
    parts = sign("GET", headers={"Date": "Wed, 25 Nov 2026 12:00:00 GMT"})
    rejects(with_header(parts, "Date", date))


text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
weird = st.text(max_size=40)  # may contain lone surrogates


auth_headers = st.one_of(
    weird,
    st.builds("{} {}".format, st.sampled_from(["AWS4-HMAC-SHA256", "AWS4", "AWS"]), weird),
    st.builds("AWS4-HMAC-SHA256 Credential={}, SignedHeaders={}, Signature={}".format,
              weird, weird, st.one_of(weird, st.just("a" * 64))))
auth_params = st.sampled_from(["X-Amz-Signature", "X-Amz-Expires", "X-Amz-Date",
                               "X-Amz-Credential", "X-Amz-SignedHeaders"])


@settings(max_examples=300, deadline=None)
@given(auth=auth_headers, date=st.one_of(weird, st.just("20261125T120000Z")),
       query=st.lists(st.tuples(st.one_of(weird, auth_params), weird), max_size=6),
       path=weird, body=st.binary(max_size=40), method=weird,
       extra=st.dictionaries(weird, weird, max_size=4))
def test_fuzz_only_signature_errors(auth, date, query, path, body, method, extra):
    headers = {**extra, "Host": "127.0.0.1:8080", "Authorization": auth, "X-Amz-Date": date}
    is_signed(headers, query)
    with pytest.raises(SignatureError):
        verify(method, path, query, headers, body, secret_for={KEY_ID: SECRET}.get,
               region=REGION, services=SERVICES, now=NOW)


@settings(max_examples=100, deadline=None)
@given(segments=st.lists(text.filter(lambda s: s not in (".", "..")), min_size=1, max_size=4),
       params=st.lists(st.tuples(text.filter(lambda k: not k.lower().startswith("x-amz-")),
                                 text), max_size=5), body=st.binary(max_size=100),
       presign=st.booleans())
def test_fuzz_botocore_signed_requests_verify(segments, params, body, presign):
    url = BASE + "/" + "/".join(quote(s, safe="~") for s in segments)
    method = "GET" if presign else "POST"
    parts = sign(method, url, params=params, data=b"" if presign else body,
                 expires=60 if presign else None)
    assert check(parts).presigned == presign


# ---------------------------------------------------------------- helpers

def test_wsgi_path():
    assert wsgi_path({"RAW_URI": "/v1/a%20b?x=1", "PATH_INFO": "/v1/a b"}) == "/v1/a%20b"
    assert wsgi_path({"REQUEST_URI": "/v1/caf\u00c3\u00a9"}) == "/v1/caf\u00e9"
    environ = {"PATH_INFO": "/v1/caf\u00c3\u00a9 x", "SCRIPT_NAME": "/api"}
    assert wsgi_path(environ) == "/api/v1/caf%C3%A9%20x"
    assert wsgi_path({"REQUEST_URI": "http://h/x", "PATH_INFO": "/x"}) == "/x"


def test_wsgi_path_with_flask_test_client():
    flask = pytest.importorskip("flask")
    app = flask.Flask(__name__)
    seen = {}

    @app.route("/<path:p>", methods=["GET", "POST"])
    def catch(p):
        body = flask.request.get_data(cache=True)
        seen["result"] = verify(flask.request.method, wsgi_path(flask.request.environ),
                                parse_query(flask.request.query_string), flask.request.headers,
                                body, secret_for={KEY_ID: SECRET}.get, region=REGION,
                                services=SERVICES, now=NOW)
        return "ok"

    parts = sign("POST", f"http://localhost/v1/images/{quote('a b/c', safe='')}/x?q=a%20b&q=c",
                 data=b"Action=Run", headers={"Content-Type": FORM})
    response = app.test_client().open(
        parts.path, method=parts.method, query_string=parts.query, data=parts.body,
        headers={k: v for k, v in parts.headers.items() if k != "Host"})
    assert response.status_code == 200, response.data
    assert seen["result"].access_key_id == KEY_ID


def test_is_signed():
    assert is_signed({"authorization": "AWS4-HMAC-SHA256 Credential=..."}, [])
    assert is_signed({}, [("X-Amz-Credential", "x")])
    assert not is_signed({"Authorization": "Bearer x"}, [("x-amz-signature", "x")])
    assert not is_signed({}, [])


# ---------------------------------------------------------------- boto3, end to end

DESCRIBE = (b'<?xml version="1.0" encoding="UTF-8"?>'
            b'<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            b"<requestId>r-1</requestId><reservationSet/></DescribeInstancesResponse>")


class FakeRaw:
    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **kwargs):
        yield self.body


def test_boto3_ec2_client_requests_verify():
    captured = []

    def capture(request, **kwargs):
        captured.append(to_parts(request.method, request.url, request.headers, request.body))
        return AWSResponse(request.url, 200, {}, FakeRaw(DESCRIBE))

    session = boto3.session.Session(aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                                    region_name=REGION)
    client = session.client("ec2", endpoint_url="http://127.0.0.1:9")
    client.meta.events.register("before-send", capture)
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW.replace(tzinfo=None)):
        answer = client.describe_instances(
            InstanceIds=[INSTANCE],
            Filters=[{"Name": "instance-state-name", "Values": ["running"]}])
    assert answer["Reservations"] == []
    (parts,) = captured
    assert parts.method == "POST" and parts.path == "/"
    assert b"Action=DescribeInstances" in parts.body and INSTANCE.encode() in parts.body
    assert check(parts) == SignedRequest(KEY_ID, REGION, "ec2", NOW, presigned=False)
    rejects(dataclasses.replace(parts, body=parts.body.replace(b"running", b"stopped")))
