"""Hostile and odd input, to the REST API and (where it applies) the EC2 Query API, through
the Flask test client signed in with HTTP Basic (the EC2 API at / with form posts signed
with SigV4).

Every bad request is a clear 4xx -- REST: exactly ``{"error": {"code", "message"}}``;
EC2: its XML error -- never a 500 (the test client fails a test at once on any 500), and
leaves nothing behind: no instance rows, usage events, key pairs, domains or files. The
odd but valid ones (tag values with XML metacharacters, ``../``) round-trip and make valid
domain XML, and no request writes a file outside the service's directories."""

from __future__ import annotations

import base64
import io
import json
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from sqlalchemy import func, select

from api.app import MAX_BODY
from computed.virt.domain_xml import METADATA_NS
from computed.compute.launch import MAX_USER_DATA
from computed.store.models import UsageEvent
from computed.settings import Settings, SettingsError
from tests.unit.api.test_api_auth import sigv4

VERSION = "2016-11-15"
EC2_NS = {"ec2": "http://ec2.amazonaws.com/doc/2016-11-15/"}
FORM = "application/x-www-form-urlencoded"
#: a name no file of any run has: it must appear nowhere on disk after the requests
MARKER = f"hostile-{uuid.uuid4().hex[:12]}"
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEV9iLq7m+ZTGe1wQp6Dd1LQn4sR0mYDY3QsHgzyvJ2m test"


# -- helpers -------------------------------------------------------------------------------

def ec2(client, action: str, data: bytes | None = None, **params):
    """An EC2 Query API call as a form post (DATA: a raw body instead of PARAMS), signed with
    SigV4 as the test account (HTTP Basic takes no EC2 action that changes something)."""
    body = data if data is not None else urlencode({"Action": action, "Version": VERSION, **params}).encode()
    key_id, secret = client.application.config["TEST_AUTH"]
    region = client.application.extensions["computed"].settings.region
    path, headers = sigv4("POST", "/", key_id, secret, region, body=body, headers={"Content-Type": FORM},
                          service="ec2")
    return client.post(path, data=body, headers=headers, auth=None)


def ec2_error(response, code: str | set[str], status: int = 400) -> str:
    """RESPONSE is the EC2 XML error CODE with STATUS; its message."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "text/xml", response.mimetype
    root = ET.fromstring(response.get_data())
    assert root.tag == "Response", response.get_data(as_text=True)
    got = root.find("Errors/Error/Code").text
    assert got in ({code} if isinstance(code, str) else code), response.get_data(as_text=True)
    message = root.find("Errors/Error/Message").text
    assert message
    return message


def ec2_ok(response) -> ET.Element:
    assert response.status_code == 200, response.get_data(as_text=True)
    return ET.fromstring(response.get_data())


def files_under(root: Path) -> set[str]:
    """Every file and directory under ROOT (relative paths), but the database's own files."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.name.startswith("computed.db")}


def usage_events(service) -> int:
    with service.db.reading() as s:
        return s.scalar(select(func.count()).select_from(UsageEvent))


@pytest.fixture
def nothing_left(app, service, nothing_launched, tmp_path: Path):
    """nothing_left(): call before and after refused requests -- the second call checks
    that they left no instance, usage event, key pair, domain or file behind."""
    before = {}

    def check():
        state = {"files": files_under(tmp_path), "usage": usage_events(service),
                 "keypairs": service.keypairs.list(app.config["TEST_CALLER"])}
        if not before:
            before.update(state)
            return
        nothing_launched()
        assert state == before

    return check


@pytest.fixture
def caller(app):
    return app.config["TEST_CALLER"]


def no_marker_anywhere(tmp_path: Path) -> None:
    """No file or directory is named after MARKER: not in the test's directories (where a
    ``../`` from the instances directory would lead), nor in /tmp, the working directory or
    home (where an absolute or deeper one would)."""
    roots = [(tmp_path.parents[2], True), (Path("/tmp"), False), (Path.cwd(), False), (Path.home(), False)]
    found = []
    for root, deep in roots:
        found += [str(p) for p in (root.rglob if deep else root.glob)(f"*{MARKER}*")]
    assert found == [], f"files named after request input: {found}"


# -- user data -----------------------------------------------------------------------------

def test_user_data_at_the_limit_and_one_byte_over(client, expect_error, nothing_launched, case, wait):
    over = [("text", {"user_data": "x" * (MAX_USER_DATA + 1)}),
            ("text, multi-byte", {"user_data": "é" * (MAX_USER_DATA // 2) + "x"}),
            ("base64", {"user_data_base64": base64.b64encode(b"\0" * (MAX_USER_DATA + 1)).decode()})]
    for label, body in over:
        with case(label):
            message = expect_error(client.post("/v1/instances", json={"size": "t3.micro", **body}), 400,
                                   "InvalidParameterValue")
            assert str(MAX_USER_DATA) in message and "user_data" in message
    nothing_launched()
    exact = [{"user_data": "x" * MAX_USER_DATA}, {"user_data": "é" * (MAX_USER_DATA // 2)},
             {"user_data_base64": base64.b64encode(b"\xff" * MAX_USER_DATA).decode()}]
    for body in exact:
        response = client.post("/v1/instances", json={"size": "t3.micro", **body})
        assert response.status_code == 202, response.get_data(as_text=True)
    wait()


def test_ec2_user_data_at_the_limit_and_one_byte_over(client, nothing_launched, wait):
    launch = {"InstanceType": "t3.micro", "MinCount": "1", "MaxCount": "1"}
    message = ec2_error(ec2(client, "RunInstances", UserData=base64.b64encode(b"x" * (MAX_USER_DATA + 1)).decode(),
                            **launch), "InvalidParameterValue")
    assert str(MAX_USER_DATA) in message
    nothing_launched()
    root = ec2_ok(ec2(client, "RunInstances", UserData=base64.b64encode(b"x" * MAX_USER_DATA).decode(), **launch))
    assert len(root.findall("ec2:instancesSet/ec2:item", EC2_NS)) == 1
    wait()


@pytest.mark.parametrize("value", ["not base64!", "QQ", "QQ=", "Q", "QQ==QQ==", "QQ== ", " QQ==", "QQ==\n",
                                   "QUJD\x00", "____", "QUJD" + "é", "%%%"])
def test_invalid_base64_user_data(client, expect_error, nothing_launched, value):
    message = expect_error(client.post("/v1/instances", json={"size": "t3.micro", "user_data_base64": value}), 400,
                           "InvalidParameterValue")
    assert "user_data_base64" in message and "base64" in message
    nothing_launched()


@pytest.mark.parametrize("value", ["not base64!", "QQ", "Q", "QQ==QQ==", "____", "QUJD\u00e9", "%%%"])
def test_ec2_invalid_base64_user_data(client, nothing_launched, value):
    message = ec2_error(ec2(client, "RunInstances", InstanceType="t3.micro", MinCount="1", MaxCount="1",
                            UserData=value), "InvalidParameterValue")
    assert "UserData" in message and "base64" in message
    nothing_launched()


def test_user_data_both_ways_at_once(client, expect_error, nothing_launched):
    message = expect_error(client.post("/v1/instances", json={"size": "t3.micro", "user_data": "#!/bin/sh",
                                                              "user_data_base64": "IyEvYmluL3No"}), 400)
    assert "user_data" in message
    nothing_launched()


# -- bytes that are not UTF-8, and JSON that is no text ----------------------------------

def test_json_bodies_that_are_not_utf8_or_not_text(client, expect_error, nothing_left, case):
    nothing_left()
    bodies = {
        "a byte that is no UTF-8": b'{"size": "t3.micro", "tags": {"k": "\xff"}}',
        "latin-1": '{"size": "t3.micro", "tags": {"k": "caf\xe9"}}'.encode("latin-1"),
        "UTF-16": '{"size": "t3.micro"}'.encode("utf-16"),
        "a lone surrogate in a tag value": b'{"size": "t3.micro", "tags": {"k": "\\ud800"}}',
        "a lone surrogate in a tag key": b'{"size": "t3.micro", "tags": {"\\udfff": "v"}}',
        "a lone surrogate in user data": b'{"size": "t3.micro", "user_data": "#!/bin/sh\\n\\ud83d"}',
        "nested too deeply": b'{"size": "t3.micro", "tags": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "an integer of 5000 digits": b'{"size": "t3.micro", "count": ' + b"9" * 5000 + b"}",
        "not JSON": b"size=t3.micro",
        "truncated": b'{"size": "t3.mi',
        "NaN": b'{"size": "t3.micro", "count": NaN}',
        "a list": b'[{"size": "t3.micro"}]',
        "a string": b'"t3.micro"',
        "null": b"null",
    }
    for label, body in bodies.items():
        with case(label):
            message = expect_error(client.post("/v1/instances", data=body, content_type="application/json"), 400)
            assert "Internal" not in message
    nothing_left()


def test_key_pair_bodies_that_are_not_text(client, expect_error, nothing_left, case):
    nothing_left()
    key = PUBLIC_KEY.rsplit(" ", 1)[0]
    for label, body in {"surrogate in the key's comment": f'{{"name": "k", "public_key": "{key} \\ud800"}}'.encode(),
                        "not UTF-8": b'{"name": "k\xff"}'}.items():
        with case(label):
            expect_error(client.post("/v1/keypairs", data=body, content_type="application/json"), 400)
    nothing_left()


def test_a_body_that_is_not_json_is_415(client, expect_error, nothing_left, case):
    nothing_left()
    for path in ("/v1/instances", "/v1/keypairs"):
        with case(path):
            message = expect_error(client.post(path, data={"size": "t3.micro", "name": "k"}), 415,
                                   "UnsupportedMediaType")
            assert "application/json" in message
            expect_error(client.post(path, data=b'{"size": "t3.micro"}', content_type="text/plain"), 415)
    nothing_left()


@pytest.mark.parametrize("query", ["size=%FF", "image=caf%E9", "tag=%C3", "state=%ED%A0%80", "key_name=k%FE",
                                   "%FF=1", "limit=1&next_token=%80"])
def test_query_strings_that_are_not_utf8(client, expect_error, query):
    message = expect_error(client.get(f"/v1/instances?{query}"), 400, "InvalidParameterValue")
    assert "UTF-8" in message


def test_billing_query_that_is_not_utf8(client, expect_error):
    expect_error(client.get("/v1/billing/report?start=2026-03-01T00:00:00Z&end=2026-03-02T00:00:00%FF"), 400)


def test_ec2_parameters_that_are_not_utf8(client, nothing_left, case):
    nothing_left()
    bodies = {
        "percent-encoded": b"Action=CreateKeyPair&Version=2016-11-15&KeyName=k%FF",
        "raw byte": b"Action=CreateKeyPair&Version=2016-11-15&KeyName=k\xff",
        "surrogate": b"Action=CreateKeyPair&Version=2016-11-15&KeyName=%ED%A0%80",
        "in a name": b"Action=DescribeKeyPairs&Version=2016-11-15&K%FFy=1",
    }
    for label, body in bodies.items():
        with case(label):
            ec2_error(ec2(client, "", data=body), "MalformedQueryString")
    with case("query string"):
        ec2_error(client.get("/?Action=DescribeKeyPairs&Version=2016-11-15&KeyName.1=%FF"), "MalformedQueryString")
    nothing_left()


def test_credentials_that_are_not_utf8(client, expect_error):
    token = base64.b64encode(b"\xff\xfe:\xff").decode()
    expect_error(client.get("/v1/instances", auth=None, headers={"Authorization": f"Basic {token}"}), 401,
                 "AuthFailure")
    expect_error(client.get("/v1/instances", auth=None, headers={"Authorization": "Basic !!!"}), 401, "AuthFailure")


# -- counts --------------------------------------------------------------------------------

@pytest.mark.parametrize("count", [0, -1, 21, 10_000, 2**31, 2**63, 10**30, 1.5, 1e400, "1", "", True, None, [1],
                                   {"n": 1}])
def test_counts(client, expect_error, nothing_launched, count):
    message = expect_error(client.post("/v1/instances", json={"size": "t3.micro", "count": count}), 400,
                           "InvalidParameterValue")
    assert "count" in message
    nothing_launched()


@pytest.mark.parametrize("min_count,max_count", [("0", "1"), ("-1", "1"), ("1", "0"), ("1", "-1"), ("2", "1"),
                                                 ("1", "10000"), ("10000", "10000"), ("1", "99999999999999999999"),
                                                 ("1", str(2**63)), ("1", "1e3"), ("1", "1.0"), ("1", ""),
                                                 ("one", "1"), ("1", "0x10")])
def test_ec2_counts(client, nothing_launched, min_count, max_count):
    message = ec2_error(ec2(client, "RunInstances", InstanceType="t3.micro", MinCount=min_count,
                            MaxCount=max_count), {"InvalidParameterValue", "MissingParameter"})
    assert "Count" in message or "count" in message
    nothing_launched()


# -- names, tags and ids with metacharacters ----------------------------------------------

BAD_NAMES = ["", " ", "<k>", "a&b", "a'b", 'a"b', "a;b", "a b", "a\nb", "a\rb", "a\tb", "a\x00b", "k\n", "\n",
             "../k", "k/../../x", "..", ".", "/etc/passwd", "k/", "a\\b", "k" * 256, "é", "-k", ".k",
             f"../../../../tmp/{MARKER}", f"..%2F{MARKER}"]


def test_bad_key_pair_names(client, expect_error, nothing_left, case, tmp_path):
    nothing_left()
    for name in BAD_NAMES:
        with case(f"create {name[:40]!r}"):
            message = expect_error(client.post("/v1/keypairs", json={"name": name}), 400, "InvalidParameterValue")
            assert "name" in message
        with case(f"import {name[:40]!r}"):
            expect_error(client.post("/v1/keypairs", json={"name": name, "public_key": PUBLIC_KEY}), 400,
                         "InvalidParameterValue")
        with case(f"get and delete {name[:40]!r}"):
            for method in ("get", "delete"):
                response = getattr(client, method)(f"/v1/keypairs/{quote(name, safe='')}")
                assert response.status_code in (404, 405), response.get_data(as_text=True)
                assert set(response.get_json()) == {"error"}
        with case(f"launch with {name[:40]!r}"):
            expect_error(client.post("/v1/instances", json={"size": "t3.micro", "key_name": name}), 400)
    nothing_left()
    no_marker_anywhere(tmp_path)


def test_ec2_bad_key_pair_names(client, nothing_left, case, tmp_path):
    nothing_left()
    material = base64.b64encode(PUBLIC_KEY.encode()).decode()
    for name in BAD_NAMES:
        with case(repr(name[:40])):
            if name == "":  # an empty parameter is one not given
                ec2_error(ec2(client, "CreateKeyPair", KeyName=name), {"MissingParameter", "InvalidParameterValue"})
                continue
            ec2_error(ec2(client, "CreateKeyPair", KeyName=name), "InvalidParameterValue")
            ec2_error(ec2(client, "ImportKeyPair", KeyName=name, PublicKeyMaterial=material), "InvalidParameterValue")
            ec2_error(ec2(client, "RunInstances", InstanceType="t3.micro", MinCount="1", MaxCount="1",
                          KeyName=name), {"InvalidParameterValue", "InvalidKeyPair.NotFound"})
            ec2_ok(ec2(client, "DeleteKeyPair", KeyName=name)) if "\x00" not in name else \
                ec2_error(ec2(client, "DeleteKeyPair", KeyName=name), "InvalidParameterValue")
    nothing_left()
    no_marker_anywhere(tmp_path)


BAD_TAGS = [({"": "v"}, "key"), ({"k\x00": "v"}, "key"), ({"k\n": "v"}, "key"), ({"\x7f": "v"}, "key"),
            ({"k" * 129: "v"}, "key"), ({"aws:name": "v"}, "reserved"), ({"Computed:ssh-port": "1"}, "reserved"),
            ({"k": "v\x00"}, "value"), ({"k": "line\nbreak"}, "value"), ({"k": "\x1b[31m"}, "value"),
            ({"k": "v" * 257}, "value"), ({f"k{i}": "v" for i in range(51)}, "tags")]


def test_bad_tags(client, expect_error, nothing_left, case):
    nothing_left()
    for tags, what in BAD_TAGS:
        with case(f"{what}: {str(tags)[:60]}"):
            message = expect_error(client.post("/v1/instances", json={"size": "t3.micro", "tags": tags}), 400,
                                   "InvalidParameterValue")
            assert "tag" in message
    for tags in ({"k": 1}, {"k": None}, {"k": ["v"]}, ["k", "v"], "k=v"):
        with case(f"not a dict of strings: {tags!r}"):
            expect_error(client.post("/v1/instances", json={"size": "t3.micro", "tags": tags}), 400)
    nothing_left()


def test_ec2_bad_tags(client, nothing_left, case):
    nothing_left()
    for tags, what in BAD_TAGS:
        if what == "key" and not next(iter(tags)):
            continue  # an empty Tag.N.Key is one not given: MissingParameter (below)
        with case(f"{what}: {str(tags)[:60]}"):
            params = {"InstanceType": "t3.micro", "MinCount": "1", "MaxCount": "1",
                      "TagSpecification.1.ResourceType": "instance"}
            for n, (key, value) in enumerate(tags.items(), 1):
                params |= {f"TagSpecification.1.Tag.{n}.Key": key, f"TagSpecification.1.Tag.{n}.Value": value}
            ec2_error(ec2(client, "RunInstances", **params), "InvalidParameterValue")
    nothing_left()


@pytest.mark.parametrize("instance_id", ["<script>", "i-0123456789abcdef0\x00", "i-0123456789abcdef0\n",
                                         "i-0123456789ABCDEF0", "i-" + "0" * 10_000, "../../etc/passwd",
                                         "i-0123456789abcdef0' OR '1'='1", "%", "i-0123456789abcdef"])
def test_bad_instance_ids(client, expect_error, instance_id):
    for method, suffix in (("get", ""), ("delete", ""), ("post", "/stop"), ("post", "/start"), ("post", "/reboot"),
                           ("get", "/console")):
        response = getattr(client, method)(f"/v1/instances/{quote(instance_id, safe='')}{suffix}")
        if response.status_code == 404:  # a / in the id: no such route at all
            assert "/" in instance_id and set(response.get_json()) == {"error"}
        else:
            expect_error(response, 400, "InvalidInstanceID.Malformed")
    if "\x00" not in instance_id:
        for action in ("DescribeInstances", "TerminateInstances", "StopInstances"):
            ec2_error(ec2(client, action, **{"InstanceId.1": instance_id}), "InvalidInstanceID.Malformed")
    else:
        ec2_error(ec2(client, "TerminateInstances", **{"InstanceId.1": instance_id}), "InvalidParameterValue")


def test_nul_and_control_characters_in_query_filters(client, expect_error, case):
    for query in ("size=t3.micro%00", "image=a%00b", "tag=k%00", "tag=k%3Dv%0A", "key_name=k%00", "next_token=%00",
                  "state=running%00"):
        with case(query):
            expect_error(client.get(f"/v1/instances?{query}"), 400, "InvalidParameterValue")
    for params in ({"Filter.1.Name": "instance-type", "Filter.1.Value.1": "t3\x00"},
                   {"Filter.1.Name": "tag:k\x00", "Filter.1.Value.1": "v"}, {"Filter\x00": "x"}):
        with case(repr(params)):
            ec2_error(ec2(client, "DescribeInstances", **params), "InvalidParameterValue")


# -- very long strings ---------------------------------------------------------------------

def test_very_long_strings(client, expect_error, nothing_left, case):
    nothing_left()
    long = "x" * 100_000
    for label, body in {"size": {"size": long}, "image": {"size": "t3.micro", "image": long},
                        "key_name": {"size": "t3.micro", "key_name": long},
                        "client_token": {"size": "t3.micro", "client_token": long},
                        "tag key": {"size": "t3.micro", "tags": {long: "v"}},
                        "tag value": {"size": "t3.micro", "tags": {"k": long}}}.items():
        with case(label):
            expect_error(client.post("/v1/instances", json=body), 400)
    with case("key pair"):
        expect_error(client.post("/v1/keypairs", json={"name": long}), 400)
        expect_error(client.post("/v1/keypairs", json={"name": "k", "public_key": long}), 400)
    with case("query"):
        for name in ("size", "image", "tag", "key_name", "next_token", "state"):
            expect_error(client.get(f"/v1/instances?{name}={long}"), 400)
    with case("path"):
        expect_error(client.get(f"/v1/instances/i-{long}"), 400)
        assert client.get(f"/v1/keypairs/{long}").status_code == 404
    with case("EC2"):
        for params in ({"Action": "RunInstances", "InstanceType": long, "MinCount": "1", "MaxCount": "1"},
                       {"Action": "CreateKeyPair", "KeyName": long},
                       {"Action": "DescribeInstances", "Filter.1.Name": long, "Filter.1.Value.1": "v"},
                       {"Action": "DescribeInstances", long: "v"}):
            action = params.pop("Action")
            response = ec2(client, action, **params)
            assert 400 <= response.status_code < 500, response.get_data(as_text=True)[:500]
            ET.fromstring(response.get_data())
    nothing_left()


# -- unknown fields ------------------------------------------------------------------------

def test_unknown_fields_are_named(client, expect_error, nothing_left, case):
    nothing_left()
    for path, body, field in (("/v1/instances", {"size": "t3.micro", "colour": "blue"}, "colour"),
                              ("/v1/instances", {"size": "t3.micro", "Size": "t3.large"}, "Size"),
                              ("/v1/instances", {"size": "t3.micro", "<x>": 1}, "<x>"),
                              ("/v1/keypairs", {"name": "k", "private_key": "-----BEGIN"}, "private_key")):
        with case(f"{path} {field}"):
            message = expect_error(client.post(path, json=body), 400, "InvalidParameterValue")
            assert field in message and "Unknown field" in message
    for query, field in (("colour=blue", "colour"), ("limit=5&Limit=6", "Limit")):
        with case(query):
            assert field in expect_error(client.get(f"/v1/instances?{query}"), 400)
    with case("billing"):
        assert "colour" in expect_error(client.get("/v1/billing/report?start=2026-03-01T00:00:00Z"
                                                   "&end=2026-03-02T00:00:00Z&colour=blue"), 400)
    with case("EC2"):
        assert "Colour" in ec2_error(ec2(client, "RunInstances", InstanceType="t3.micro", MinCount="1",
                                         MaxCount="1", Colour="blue"), "UnknownParameter")
    nothing_left()


# -- the body size limit -------------------------------------------------------------------

def test_body_over_the_default_limit(client, expect_error, nothing_left):
    nothing_left()
    body = json.dumps({"size": "t3.micro", "user_data": "x" * MAX_BODY}).encode()
    message = expect_error(client.post("/v1/instances", data=body, content_type="application/json"), 413,
                           "RequestTooLarge")
    assert str(MAX_BODY) in message
    ec2_error(ec2(client, "RunInstances", data=b"Action=RunInstances&Version=2016-11-15&X=" + b"x" * MAX_BODY),
              "RequestEntityTooLarge", 413)
    nothing_left()


def test_the_body_limit_is_a_setting(make_app, expect_error, case):
    app = make_app(api_max_body=4096)
    client = app.test_client()
    svc = app.extensions["computed"]
    def pad(n: int) -> bytes:
        return json.dumps({"name": "k", "public_key": "x" * n}).encode()

    at_limit = pad(4096 - len(pad(0)))
    assert len(at_limit) == 4096
    with case("at the limit: read (and refused for what it says)"):
        expect_error(client.post("/v1/keypairs", data=at_limit, content_type="application/json"), 400,
                     "InvalidKey.Format")
    with case("one byte over"):
        message = expect_error(client.post("/v1/keypairs", data=pad(4097 - len(pad(0))),
                                           content_type="application/json"), 413, "RequestTooLarge")
        assert "4096" in message
    with case("over, without credentials: refused before anything reads it"):
        expect_error(client.post("/v1/keypairs", data=b"x" * 5000, content_type="application/json", auth=None),
                     413, "RequestTooLarge")
    with case("over, without a Content-Length (streamed): refused as it is read"):
        response = client.post("/v1/keypairs", input_stream=io.BytesIO(pad(10_000)), content_type="application/json",
                               environ_overrides={"wsgi.input_terminated": True})
        expect_error(response, 413, "RequestTooLarge")
    with case("on a route that reads no body"):
        expect_error(client.get("/v1/sizes", data=b"x" * 5000), 413, "RequestTooLarge")
    with case("EC2"):
        message = ec2_error(ec2(client, "", data=b"Action=DescribeRegions&Version=2016-11-15&X=" + b"x" * 5000),
                            "RequestEntityTooLarge", 413)
        assert "4096" in message
        ec2_ok(ec2(client, "DescribeRegions"))
    assert svc.keypairs.list(app.config["TEST_CALLER"]) == []


def test_the_body_limit_setting(tmp_path: Path):
    assert Settings.load({"COMPUTED_VAR_DIR": str(tmp_path)}).api_max_body == 1024 * 1024 == MAX_BODY
    assert Settings.load({"COMPUTED_VAR_DIR": str(tmp_path), "COMPUTED_API_MAX_BODY": "65536"}).api_max_body == 65536
    (tmp_path / "computed.toml").write_text("[api]\nmax_body_bytes = 2048\n")
    assert Settings.load({"COMPUTED_VAR_DIR": str(tmp_path)}).api_max_body == 2048
    for bad in ("0", "-1", "1MiB", "1.5", " "):
        with pytest.raises(SettingsError, match="COMPUTED_API_MAX_BODY"):
            Settings.load({"COMPUTED_VAR_DIR": str(tmp_path), "COMPUTED_API_MAX_BODY": bad})
    (tmp_path / "computed.toml").write_text('[api]\nmax_body_bytes = "lots"\n')
    with pytest.raises(SettingsError, match="max_body_bytes"):
        Settings.load({"COMPUTED_VAR_DIR": str(tmp_path)})


# -- odd but valid: round-trips, valid domain XML, no file elsewhere -------------------------

ODD_TAGS = {
    "Name": "<b>bold</b> & \"quoted\" & 'single'",
    "<k>&\"'": "key with metacharacters",
    "path": f"../../../../tmp/{MARKER}",
    "cdata": "]]><evil/><![CDATA[",
    "comment": "<!-- -->",
    "entity": "&amp; &lt; &#0; &xxe;",
    "xml": "<?xml version='1.0'?><!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><x>&e;</x>",
    "unicode": "ünïcödé ✓ 𝄞 \u202e",
    "k" * 128: "v" * 256,
    "empty": "",
    "spaces": "  ",
}


def test_odd_tags_round_trip_and_make_valid_domain_xml(client, service, wait, tmp_path):
    before = files_under(tmp_path)
    response = client.post("/v1/instances", json={"size": "t3.micro", "tags": ODD_TAGS,
                                                  "user_data": "#!/bin/sh\necho '<>&\"' ../x\n",
                                                  "client_token": "<>&'\"../ ;"})
    assert response.status_code == 202, response.get_data(as_text=True)
    inst = response.get_json()["instances"][0]
    assert inst["tags"] == ODD_TAGS
    wait()
    assert client.get(f"/v1/instances/{inst['id']}").get_json()["tags"] == ODD_TAGS

    # the domain's XML as libvirt keeps it: well-formed, ours, and with no element a tag value made
    domain = service.default_driver.conn().lookupByName(f"computed-{inst['id']}")
    xml = domain.XMLDesc()
    root = ET.fromstring(xml)
    meta = root.find(f"metadata/{{{METADATA_NS}}}instance")
    assert meta is not None, xml
    found = {child.tag.split("}", 1)[1]: child.text for child in meta}
    assert found["id"] == inst["id"] and found["size"] == "t3.micro" and found["owner"] == inst["owner"]
    assert found["reservation"] == inst["reservation_id"]
    assert not [e for e in root.iter() if e.tag in ("evil", "x", "b")], xml
    texts = {e.text for e in root.iter() if e.text} | {v for e in root.iter() for v in e.attrib.values()}
    for value in ODD_TAGS.values():  # a tag in the XML, if any ever is, is its text, whole
        assert value not in xml or value in texts or not any(c in value for c in "<>&'\""), value

    # the EC2 API's XML carries them, escaped, and they come back whole
    root = ec2_ok(ec2(client, "DescribeTags", **{"Filter.1.Name": "resource-id", "Filter.1.Value.1": inst["id"]}))
    got = {i.find("ec2:key", EC2_NS).text: i.find("ec2:value", EC2_NS).text or ""
           for i in root.findall("ec2:tagSet/ec2:item", EC2_NS)}
    assert {k: v for k, v in got.items() if not k.startswith("computed:")} == ODD_TAGS
    root = ec2_ok(ec2(client, "DescribeInstances", **{"InstanceId.1": inst["id"]}))
    items = root.findall(".//ec2:instancesSet/ec2:item/ec2:tagSet/ec2:item", EC2_NS)
    assert {i.find("ec2:key", EC2_NS).text: i.find("ec2:value", EC2_NS).text or "" for i in items
            if not i.find("ec2:key", EC2_NS).text.startswith("computed:")} == ODD_TAGS

    # files: only the instance's own, in its directory
    added = files_under(tmp_path) - before
    assert {Path(p).parts[:2] for p in added if not management_key(p)} <= {("instances",), ("instances", inst["id"])}, \
        sorted(added)
    no_marker_anywhere(tmp_path)


def management_key(path: str) -> bool:
    """Whether PATH is the host's management key, made at its first launch (and its directory)."""
    parts = Path(path).parts
    return parts == ("management",) or len(parts) == 2 and parts[0] == "management" and parts[1].startswith("mk-")


def test_ec2_odd_tags_round_trip(client, wait, tmp_path):
    before = files_under(tmp_path)
    params = {"InstanceType": "t3.micro", "MinCount": "1", "MaxCount": "1",
              "TagSpecification.1.ResourceType": "instance"}
    for n, (key, value) in enumerate(ODD_TAGS.items(), 1):
        params |= {f"TagSpecification.1.Tag.{n}.Key": key, f"TagSpecification.1.Tag.{n}.Value": value}
    root = ec2_ok(ec2(client, "RunInstances", **params))
    instance_id = root.find("ec2:instancesSet/ec2:item/ec2:instanceId", EC2_NS).text
    wait()
    assert client.get(f"/v1/instances/{instance_id}").get_json()["tags"] == ODD_TAGS
    ec2_ok(ec2(client, "CreateTags", **{"ResourceId.1": instance_id, "Tag.1.Key": "later",
                                        "Tag.1.Value": f"</value><evil/>../{MARKER}"}))
    assert client.get(f"/v1/instances/{instance_id}").get_json()["tags"]["later"] == f"</value><evil/>../{MARKER}"
    added = files_under(tmp_path) - before
    assert {Path(p).parts[:2] for p in added if not management_key(p)} <= {("instances",), ("instances", instance_id)}, \
        sorted(added)
    no_marker_anywhere(tmp_path)


def test_key_pair_names_that_are_odd_but_valid(client, tmp_path):
    before = files_under(tmp_path)
    for name in ("k" * 255, "a.b_c@d+e-f", "0", "a..b", "a...", "9--"):
        response = client.post("/v1/keypairs", json={"name": name})
        assert response.status_code == 201, response.get_data(as_text=True)
        assert client.get(f"/v1/keypairs/{name}").get_json()["name"] == name
    assert files_under(tmp_path) == before  # key pairs live in the database only
