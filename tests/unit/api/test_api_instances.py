"""/v1/instances: launching (count, tags, user data, client tokens, the default image),
listing with filters and pages, showing one, and every error a request can get. No request
here may answer 500 (the client fixture fails the test at once if one does), and a launch
that is refused leaves no row, no file and no domain behind."""

from __future__ import annotations

import base64
import gzip
import io
import json
import subprocess

import pycdlib
import pytest
import yaml

from computed.errors import InstanceIdMalformed
from computed.compute.launch import MAX_USER_DATA

IMAGE = "debian-12-podman"
VALID_ID_UNKNOWN = "i-0123456789abcdef0"


def read_seed(path) -> dict[str, bytes]:
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        files = {}
        for name in ("meta-data", "user-data"):
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, joliet_path="/" + name)
            files[name] = buf.getvalue()
        return files
    finally:
        iso.close()


def ids(listing) -> list[str]:
    return [i["id"] for i in listing.get_json()["instances"]]


# -- launch ------------------------------------------------------------------------------

def test_launch_goes_pending_then_running(client, launch, wait, service, settings, our_domains, image, parse_ssh):
    result = launch(size="t3.small", image=IMAGE)
    assert set(result) == {"reservation_id", "instances"}
    assert len(result["instances"]) == 1
    inst = result["instances"][0]
    assert inst["reservation_id"] == result["reservation_id"] and result["reservation_id"].startswith("r-")
    assert inst["state"] == {"name": "pending", "code": 0}
    assert inst["state_reason"] is None
    assert (inst["size"], inst["vcpus"], inst["memory_mib"], inst["disk_gib"]) == ("t3.small", 2, 2048, 8)
    assert (inst["price_per_hour"], inst["currency"]) == ("0.0208", "USD")
    assert (inst["image"], inst["image_version"]) == (IMAGE, "1.0.0")
    assert inst["key_name"] is None and inst["tags"] == {} and inst["launch_index"] == 0
    assert inst["host"] == "local"  # its name: the URI is an admin's to see (issue 17)
    low, high = settings.ssh_ports
    assert inst["ssh"]["host"] == "127.0.0.1" and low <= inst["ssh"]["port"] <= high
    assert inst["ssh"]["user"] == "debian"
    assert parse_ssh(inst["ssh"]["command"]) == ({"-p": str(inst["ssh"]["port"])}, ["debian@127.0.0.1"])
    assert inst["ready"] == {"ssh": False, "container_engine": False}

    wait()
    got = client.get(f"/v1/instances/{inst['id']}").get_json()
    assert got["state"] == {"name": "running", "code": 16}
    assert got["launch_time"] == inst["launch_time"]
    assert our_domains() == {f"computed-{inst['id']}": "running"}

    files = settings.instances_dir / inst["id"]
    assert sorted(p.name for p in files.iterdir()) == ["console.log", "disk.qcow2", "seed.iso"]
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(files / "disk.qcow2")],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["format"] == "qcow2"
    assert info["backing-filename"] == str(image.artifact_path("disk"))
    assert info["virtual-size"] == 8 << 30
    seed = read_seed(files / "seed.iso")
    meta = yaml.safe_load(seed["meta-data"])
    assert meta["instance-id"] == inst["id"]
    # no user key: only the service's, held to its checks
    [line] = meta["public-keys"]
    key = service.management_keys.current("local")
    assert line.startswith('restrict,command="') and line.endswith(key.public_openssh)
    assert seed["user-data"] == b""


def test_count_three(client, launch, wait, our_domains, settings):
    result = launch(count=3)
    instances = result["instances"]
    assert len(instances) == 3
    assert len({i["id"] for i in instances}) == 3
    assert {i["reservation_id"] for i in instances} == {result["reservation_id"]}
    assert [i["launch_index"] for i in instances] == [0, 1, 2]
    ports = [i["ssh"]["port"] for i in instances]
    assert len(set(ports)) == 3 and all(settings.ssh_ports[0] <= p <= settings.ssh_ports[1] for p in ports)
    wait()
    assert our_domains() == {f"computed-{i['id']}": "running" for i in instances}
    listed = client.get("/v1/instances").get_json()["instances"]
    assert {i["id"] for i in listed} == {i["id"] for i in instances}
    assert all(i["state"]["name"] == "running" for i in listed)
    # a second launch gets ports of its own
    more = launch(count=2)["instances"]
    assert not {i["ssh"]["port"] for i in more} & set(ports)


def test_tags(client, launch):
    tags = {"Name": "web 1", "env": "prod", "empty": "", "k" * 128: "v" * 256, "ünïcode": "✓"}
    inst = launch(tags=tags)["instances"][0]
    assert inst["tags"] == tags
    assert client.get(f"/v1/instances/{inst['id']}").get_json()["tags"] == tags


def test_user_data_text(client, launch, wait, settings):
    text = "#cloud-config\nruncmd:\n  - echo 'héllo' > /tmp/x\n"
    inst = launch(user_data=text)["instances"][0]
    wait()
    assert read_seed(settings.instances_dir / inst["id"] / "seed.iso")["user-data"] == text.encode()


def test_user_data_base64(client, launch, wait, settings):
    data = gzip.compress(b"#cloud-config\npackages: [htop]\n") + b"\x00\xff"
    inst = launch(user_data_base64=base64.b64encode(data).decode())["instances"][0]
    wait()
    assert read_seed(settings.instances_dir / inst["id"] / "seed.iso")["user-data"] == data


def test_user_data_at_the_limit(launch, wait):
    launch(user_data="x" * MAX_USER_DATA)
    launch(user_data_base64=base64.b64encode(b"\x01" * MAX_USER_DATA).decode())
    wait()


def test_key_pair_goes_into_the_seed(client, launch, wait, settings, service, parse_ssh):
    key = client.post("/v1/keypairs", json={"name": "mine"}).get_json()
    inst = launch(key_name="mine")["instances"][0]
    assert inst["key_name"] == "mine"
    assert parse_ssh(inst["ssh"]["command"]) == ({"-i": "mine.pem", "-p": str(inst["ssh"]["port"])},
                                                 ["debian@127.0.0.1"])
    wait()
    meta = yaml.safe_load(read_seed(settings.instances_dir / inst["id"] / "seed.iso")["meta-data"])
    user_key, management = meta["public-keys"]
    assert user_key == key["public_key"]  # as given: full access
    assert management.startswith("restrict,") and management.endswith(
        service.management_keys.current("local").public_openssh)


def test_default_image_when_omitted(client, image):
    response = client.post("/v1/instances", json={"size": "t3.nano"})
    assert response.status_code == 202
    assert response.get_json()["instances"][0]["image"] == IMAGE


def test_default_image_is_a_setting(make_app, publish_image, expect_error):
    publish_image("other-image", version="3.1.0")
    client = make_app(default_image="other-image").test_client()
    inst = client.post("/v1/instances", json={"size": "t3.nano"}).get_json()["instances"][0]
    assert (inst["image"], inst["image_version"]) == ("other-image", "3.1.0")
    client = make_app(default_image="not-built").test_client()
    assert "not-built" in expect_error(client.post("/v1/instances", json={"size": "t3.nano"}), 400,
                                       "InvalidAMIID.NotFound")


# -- client tokens -------------------------------------------------------------------------

def test_client_token_makes_a_launch_idempotent(client, wait, service, our_domains, expect_error, publish_image):
    publish_image("other-image")
    body = {"size": "t3.micro", "count": 2, "tags": {"a": "b"}, "user_data": "hi", "client_token": "tok-1"}
    first = client.post("/v1/instances", json=body)
    assert first.status_code == 202
    wait()
    domains = our_domains()
    again = client.post("/v1/instances", json=body)
    assert again.status_code == 202
    assert again.get_json()["reservation_id"] == first.get_json()["reservation_id"]
    assert [i["id"] for i in again.get_json()["instances"]] == [i["id"] for i in first.get_json()["instances"]]
    assert [i["state"]["name"] for i in again.get_json()["instances"]] == ["running", "running"]
    wait()
    assert service.instances.count() == 2
    assert our_domains() == domains

    # the same token with other parameters
    for changed in ({"count": 1}, {"size": "t3.nano"}, {"tags": {}}, {"user_data": "ho"},
                    {"image": "other-image"}):
        expect_error(client.post("/v1/instances", json=body | changed), 400, "IdempotentParameterMismatch")
    assert service.instances.count() == 2

    # omitting the image is the same as naming the default; the same bytes as base64 are the same user data
    assert client.post("/v1/instances", json=body | {"image": IMAGE}).status_code == 202
    as_base64 = {k: v for k, v in body.items() if k != "user_data"} | {"user_data_base64": "aGk="}
    assert ids(client.post("/v1/instances", json=as_base64)) == [i["id"] for i in first.get_json()["instances"]]
    assert service.instances.count() == 2

    # another token is another launch
    assert client.post("/v1/instances", json=body | {"client_token": "tok-2"}).status_code == 202
    assert service.instances.count() == 4
    wait()


def test_bad_client_tokens(client, expect_error, nothing_launched, case):
    for label, token in {"empty": "", "too long": "x" * 65, "not ascii": "tökén"}.items():
        with case(label):
            expect_error(client.post("/v1/instances", json={"size": "t3.micro", "client_token": token}), 400,
                         "InvalidParameterValue")
            nothing_launched()


# -- listing -------------------------------------------------------------------------------

@pytest.fixture
def fleet(client, launch, wait, publish_image):
    """Five instances in several shapes; 'c' is terminated."""
    publish_image("other-image")
    assert client.post("/v1/keypairs", json={"name": "k1"}).status_code == 201
    made = {
        "a": launch(size="t3.nano", key_name="k1", tags={"env": "prod", "role": "web"}),
        "b": launch(size="t3.micro", tags={"env": "dev"}),
        "c": launch(size="t3.micro"),
        "d": launch(size="t3.micro", image="other-image", tags={"role": ""}),
        "e": launch(size="t3.small", key_name="k1"),
    }
    wait()
    fleet = {name: result["instances"][0]["id"] for name, result in made.items()}
    assert client.delete(f"/v1/instances/{fleet['c']}").status_code == 202
    wait()
    return fleet


FILTERS = [
    ("", "abcde"),
    ("state=running", "abde"),
    ("state=terminated", "c"),
    ("state=running&state=terminated", "abcde"),
    ("state=stopped", ""),
    ("size=t3.micro", "bcd"),
    ("size=t3.large", ""),
    ("image=other-image", "d"),
    (f"image={IMAGE}", "abce"),
    ("key_name=k1", "ae"),
    ("key_name=nobody", ""),
    ("tag=env=prod", "a"),
    ("tag=env", "ab"),
    ("tag=role", "ad"),
    ("tag=role=", "d"),
    ("tag=env&tag=role=web", "a"),
    ("tag=env=prod&tag=env=dev", ""),
    ("tag=nope", ""),
    ("size=t3.micro&state=running&tag=env", "b"),
]


def test_list_filters(client, fleet):
    for query, expected in FILTERS:
        response = client.get(f"/v1/instances?{query}")
        assert response.status_code == 200, query
        assert sorted(ids(response)) == sorted(fleet[name] for name in expected), query
        assert response.get_json()["next_token"] is None, query


def test_list_is_newest_first(client, fleet):
    assert ids(client.get("/v1/instances")) == [fleet[n] for n in "edcba"]


def test_pagination(client, launch):
    launched = [i["id"] for i in launch(count=5)["instances"]] + [launch()["instances"][0]["id"]]
    seen, token, pages = [], None, 0
    while True:
        url = "/v1/instances?limit=2" + (f"&next_token={token}" if token else "")
        body = client.get(url).get_json()
        pages += 1
        assert len(body["instances"]) <= 2
        seen += [i["id"] for i in body["instances"]]
        token = body["next_token"]
        if token is None:
            break
    assert pages == 3
    assert len(seen) == len(set(seen)) == 6 and set(seen) == set(launched)
    assert seen == ids(client.get("/v1/instances"))  # pages follow the unpaged order
    # a filter and a page size together
    body = client.get("/v1/instances?limit=1&state=pending&state=running&size=t3.micro").get_json()
    assert len(body["instances"]) == 1 and body["next_token"]


def test_a_full_last_page_has_no_next_token(client, launch):
    launch(count=2)
    body = client.get("/v1/instances?limit=2").get_json()
    assert len(body["instances"]) == 2 and body["next_token"] is None


def _token(data) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


BAD_TOKENS = {"garbage": "garbage!!", "not utf-8": "%FF%FE", "negative": _token({"o": -1}),
              "no offset": _token({"x": 1}), "list": _token([1]), "string": _token("o"),
              "string offset": _token({"o": "1"}), "float offset": _token({"o": 1.5}), "too long": "x" * 201}


def test_bad_next_token(client, launch, expect_error, case):
    launch(count=3)
    for label, token in BAD_TOKENS.items():
        with case(label):
            expect_error(client.get(f"/v1/instances?limit=1&next_token={token}"), 400, "InvalidParameterValue")


@pytest.mark.parametrize("offset", [2 ** 63, 10 ** 30])
def test_next_token_with_a_huge_offset(client, expect_error, offset):
    expect_error(client.get(f"/v1/instances?next_token={_token({'o': offset})}"), 400, "InvalidParameterValue")


def test_bad_list_queries(client, expect_error, case):
    for query in ("limit=0", "limit=1001", "limit=abc", "limit=-1", "limit=", "state=bogus", "state=Running", "tag=",
                  "size=" + "x" * 65):
        with case(query):
            expect_error(client.get(f"/v1/instances?{query}"), 400, "InvalidParameterValue")


def test_get_one(client, launch, wait):
    inst = launch(tags={"x": "y"})["instances"][0]
    wait()
    got = client.get(f"/v1/instances/{inst['id']}").get_json()
    assert got == client.get("/v1/instances").get_json()["instances"][0]
    assert got["id"] == inst["id"] and got["tags"] == {"x": "y"}


# -- refused launches ----------------------------------------------------------------------

REFUSED_LAUNCHES = {
    "unknown size": ({"size": "t9.huge"}, "InvalidInstanceType"),
    "unknown image": ({"size": "t3.micro", "image": "no-such-image"}, "InvalidAMIID.NotFound"),
    "image path": ({"size": "t3.micro", "image": "../images/debian-12-podman/current"}, "InvalidAMIID.NotFound"),
    "unknown key": ({"size": "t3.micro", "key_name": "nobody"}, "InvalidKeyPair.NotFound"),
    "user data too big": ({"size": "t3.micro", "user_data": "x" * (MAX_USER_DATA + 1)}, "InvalidParameterValue"),
    "user data too big (multibyte)": ({"size": "t3.micro", "user_data": "é" * (MAX_USER_DATA // 2 + 1)},
                                      "InvalidParameterValue"),
    "base64 user data too big": ({"size": "t3.micro",
                                  "user_data_base64": base64.b64encode(b"x" * (MAX_USER_DATA + 1)).decode()},
                                 "InvalidParameterValue"),
    "invalid base64": ({"size": "t3.micro", "user_data_base64": "not base64!"}, "InvalidParameterValue"),
    "base64 bad padding": ({"size": "t3.micro", "user_data_base64": "abc"}, "InvalidParameterValue"),
    "both user data": ({"size": "t3.micro", "user_data": "a", "user_data_base64": "YQ=="}, "InvalidParameterValue"),
    "user data not a string": ({"size": "t3.micro", "user_data": 5}, "InvalidParameterValue"),
    "count 0": ({"size": "t3.micro", "count": 0}, "InvalidParameterValue"),
    "count 21": ({"size": "t3.micro", "count": 21}, "InvalidParameterValue"),
    "count -1": ({"size": "t3.micro", "count": -1}, "InvalidParameterValue"),
    "count string": ({"size": "t3.micro", "count": "3"}, "InvalidParameterValue"),
    "count float": ({"size": "t3.micro", "count": 1.5}, "InvalidParameterValue"),
    "count bool": ({"size": "t3.micro", "count": True}, "InvalidParameterValue"),
    "count null": ({"size": "t3.micro", "count": None}, "InvalidParameterValue"),
    "tag value number": ({"size": "t3.micro", "tags": {"a": 1}}, "InvalidParameterValue"),
    "tag value null": ({"size": "t3.micro", "tags": {"a": None}}, "InvalidParameterValue"),
    "tag value object": ({"size": "t3.micro", "tags": {"a": {"b": "c"}}}, "InvalidParameterValue"),
    "tag value list": ({"size": "t3.micro", "tags": {"a": ["b"]}}, "InvalidParameterValue"),
    "tags a list": ({"size": "t3.micro", "tags": [["a", "b"]]}, "InvalidParameterValue"),
    "tag key aws:": ({"size": "t3.micro", "tags": {"aws:cloudformation": "x"}}, "InvalidParameterValue"),
    "tag key empty": ({"size": "t3.micro", "tags": {"": "x"}}, "InvalidParameterValue"),
    "tag key too long": ({"size": "t3.micro", "tags": {"k" * 129: "x"}}, "InvalidParameterValue"),
    "tag value too long": ({"size": "t3.micro", "tags": {"k": "v" * 257}}, "InvalidParameterValue"),
    "tag key control char": ({"size": "t3.micro", "tags": {"a\x01b": "x"}}, "InvalidParameterValue"),
    "tag value control char": ({"size": "t3.micro", "tags": {"a": "x\x1by"}}, "InvalidParameterValue"),
    "51 tags": ({"size": "t3.micro", "tags": {f"k{i}": "v" for i in range(51)}}, "InvalidParameterValue"),
    "size missing": ({}, "MissingParameter"),
    "size null": ({"size": None}, "InvalidParameterValue"),
    "size empty": ({"size": ""}, "InvalidParameterValue"),
    "image empty": ({"size": "t3.micro", "image": ""}, "InvalidParameterValue"),
    "key name empty": ({"size": "t3.micro", "key_name": ""}, "InvalidParameterValue"),
    "unknown field": ({"size": "t3.micro", "instance_type": "t3.micro"}, "InvalidParameterValue"),
}


def test_refused_launches_leave_nothing(client, expect_error, nothing_launched, wait, case):
    for label, (body, code) in REFUSED_LAUNCHES.items():
        with case(label):
            expect_error(client.post("/v1/instances", json=body), 400, code)
            wait()
            nothing_launched()


@pytest.mark.parametrize("tags", [{"key\n": "v"}, {"k": "value\n"}], ids=["key", "value"])
def test_tags_ending_in_a_newline_are_refused(client, expect_error, nothing_launched, wait, tags):
    expect_error(client.post("/v1/instances", json={"size": "t3.micro", "tags": tags}), 400, "InvalidParameterValue")
    wait()
    nothing_launched()


def test_an_image_outside_the_store_is_refused(client, settings, fake_build, expect_error, nothing_launched, wait):
    from images.library import ImageLibrary
    elsewhere = ImageLibrary(settings.var_dir / "elsewhere")
    with elsewhere.lock("planted"), elsewhere.staging("planted") as staging:
        fake_build(staging, "planted")
        elsewhere.publish(staging)
    response = client.post("/v1/instances", json={"size": "t3.micro", "image": "../elsewhere/planted"})
    wait()
    expect_error(response, 400, "InvalidAMIID.NotFound")
    nothing_launched()


def test_no_free_ssh_port(make_app, expect_error, wait, our_domains, free_ports):
    app = make_app(ssh_ports=free_ports(2))
    client = app.test_client()
    svc = app.extensions["computed"]
    expect_error(client.post("/v1/instances", json={"size": "t3.micro", "count": 3}), 503,
                 "InsufficientInstanceCapacity")
    assert svc.instances.count() == 0
    assert client.post("/v1/instances", json={"size": "t3.micro", "count": 2}).status_code == 202
    expect_error(client.post("/v1/instances", json={"size": "t3.micro"}), 503, "InsufficientInstanceCapacity")
    wait(svc)
    assert svc.instances.count() == 2 and len(our_domains(svc)) == 2


# -- malformed requests ------------------------------------------------------------------

def test_malformed_json(client, expect_error, nothing_launched, case):
    for data in ("{bad", "", "[]", '"size"', "null", "42", '{"size": "t3.micro",}', '{"size": "t3.micro"} x',
                 b"\xff\xfe{}"):
        with case(data):
            expect_error(client.post("/v1/instances", data=data, content_type="application/json"), 400,
                         {"InvalidParameterValue", "MissingParameter"})
            nothing_launched()


def test_wrong_content_type(client, expect_error, nothing_launched, case):
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None):
        with case(content_type):
            response = client.post("/v1/instances", data='{"size": "t3.micro"}', content_type=content_type)
            assert response.status_code in (400, 415)
            expect_error(response, response.status_code)
            nothing_launched()


def test_body_too_large(client, expect_error, nothing_launched):
    expect_error(client.post("/v1/instances", json={"size": "t3.micro", "user_data": "x" * (1100 * 1024)}), 413)
    nothing_launched()


# -- unknown and malformed ids -------------------------------------------------------------

#: EC2 answers 400 for a malformed id; this service said 404 at first (computed/errors.py decides)
MALFORMED_STATUS = InstanceIdMalformed.status
assert MALFORMED_STATUS in (400, 404)

ROUTES = [("get", ""), ("delete", ""), ("post", "/stop"), ("post", "/start"), ("post", "/reboot"),
          ("get", "/console")]


def test_malformed_instance_id(client, expect_error, case):
    for bad_id in ("i-123", "foo", "I-0123456789ABCDEF0", "i-0123456789abcdef01", "i-0123456789abcdeg0",
                   "r-0123456789abcdef0", "i-0123456789abcdef0%20", "i-", "%00"):
        for method, suffix in ROUTES:
            with case(f"{method} {bad_id}{suffix}"):
                expect_error(getattr(client, method)(f"/v1/instances/{bad_id}{suffix}"), MALFORMED_STATUS,
                             "InvalidInstanceID.Malformed")


def test_unknown_instance_id(client, expect_error, launch):
    launch()  # another instance exists
    for method, suffix in ROUTES:
        message = expect_error(getattr(client, method)(f"/v1/instances/{VALID_ID_UNKNOWN}{suffix}"), 404,
                               "InvalidInstanceID.NotFound")
        assert VALID_ID_UNKNOWN in message


# -- routes and methods --------------------------------------------------------------------

def test_unknown_route(client, expect_error, case):
    # ("/" and "/ec2/" are the EC2 Query API's, which answers in its own XML)
    for path in ("/v1/nope", "/v2/instances", "/v1/instances/i-0123456789abcdef0/explode", "/v1/keypairs/a/b",
                 "/v1", "/ec2/nope"):
        for method in ("get", "post"):
            with case(f"{method} {path}"):
                expect_error(getattr(client, method)(path), 404, "NotFound")


def test_wrong_method(client, expect_error, case):
    for method, path in [
            ("put", "/v1/instances"), ("delete", "/v1/instances"), ("patch", f"/v1/instances/{VALID_ID_UNKNOWN}"),
            ("get", f"/v1/instances/{VALID_ID_UNKNOWN}/stop"), ("post", f"/v1/instances/{VALID_ID_UNKNOWN}/console"),
            ("post", "/v1/sizes"), ("delete", "/v1/images"), ("put", "/v1/keypairs/x"), ("post", "/health")]:
        with case(f"{method} {path}"):
            response = getattr(client, method)(path)
            expect_error(response, 405, "MethodNotAllowed")
            assert response.headers["Allow"]
