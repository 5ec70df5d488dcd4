"""The EC2 Query API's envelope, XML and errors, through Flask's test client on a small app
(the EC2 blueprint over a stand-in service; no libvirt): routes and methods, Action and
Version, parameters, the XML of answers and of errors, error statuses, DryRun, and the
catalog actions that need no instance (types, images, regions, zones)."""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from decimal import Decimal

import flask
import pytest

import api.ec2
from api.ec2 import context
from api.ec2.render import ami_id
from computed.compute.sizes import Size, SizeCatalog

NS = "{http://ec2.amazonaws.com/doc/2016-11-15/}"
V = "2016-11-15"


def ok(response, action: str) -> ET.Element:
    """The root of a successful answer, checked: status, type, namespace, requestId."""
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Content-Type"] == "text/xml;charset=UTF-8"
    body = response.get_data()
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(body)
    assert root.tag == f"{NS}{action}Response"
    request_id = root.find(f"{NS}requestId").text
    assert uuid.UUID(request_id) and response.headers["x-amzn-RequestId"] == request_id
    assert root[0].tag == f"{NS}requestId"
    return root


def error(response, status: int, code: str) -> str:
    """The message of an EC2 error answer, checked: exactly Response/Errors/Error/{Code,
    Message} and RequestID, no namespace, the status and the code."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["Content-Type"] == "text/xml;charset=UTF-8"
    body = response.get_data()
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<Response>')
    root = ET.fromstring(body)
    assert root.tag == "Response" and [c.tag for c in root] == ["Errors", "RequestID"]
    errors = root.find("Errors")
    assert [c.tag for c in errors] == ["Error"]
    assert [c.tag for c in errors.find("Error")] == ["Code", "Message"]
    assert uuid.UUID(root.find("RequestID").text)
    assert errors.find("Error/Code").text == code, body
    message = errors.find("Error/Message").text
    assert message
    return message


def call(client, action: str | None, method: str = "POST", version: str | None = V, path: str = "/", **params):
    data = {k.replace("__", "."): v for k, v in params.items()}
    if action is not None:
        data["Action"] = action
    if version is not None:
        data["Version"] = version
    if method == "GET":
        return client.get(path, query_string=data)
    return client.open(path, method=method, data=data)


# -- routes, methods, envelope -----------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/ec2/"])
def test_get_and_post_on_both_paths(lite, path):
    for method in ("GET", "POST"):
        root = ok(call(lite, "DescribeRegions", method=method, path=path), "DescribeRegions")
        assert root.find(f"{NS}regionInfo/{NS}item/{NS}regionName").text == "computed-1"
        assert root.find(f"{NS}regionInfo/{NS}item/{NS}regionEndpoint").text == "localhost"


def test_parameters_from_query_and_body_together(lite):
    response = lite.post("/?Action=DescribeRegions", data={"Version": V, "RegionName.1": "computed-1"})
    ok(response, "DescribeRegions")


def test_a_parameter_in_both_query_and_body_is_refused(lite):
    response = lite.post(f"/?Action=DescribeRegions&Version={V}", data={"Version": V})
    assert "more than once" in error(response, 400, "InvalidParameterValue")


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_other_methods(lite, method):
    error(call(lite, "DescribeRegions", method=method), 405, "UnsupportedHttpVerb")


def test_missing_action(lite):
    error(call(lite, None), 400, "MissingAction")
    error(lite.get("/"), 400, "MissingAction")
    error(call(lite, ""), 400, "MissingAction")


def test_invalid_action(lite):
    assert "DescribeVolumes" in error(call(lite, "DescribeVolumes"), 400, "InvalidAction")
    error(call(lite, "describeregions"), 400, "InvalidAction")


def test_version(lite):
    assert "Version" in error(call(lite, "DescribeRegions", version=None), 400, "MissingParameter")
    assert "2014-01-01" in error(call(lite, "DescribeRegions", version="2014-01-01"), 400, "NoSuchVersion")


def test_unknown_parameter(lite):
    message = error(call(lite, "DescribeRegions", Colour="blue"), 400, "UnknownParameter")
    assert message == "The parameter Colour is not recognized"
    error(call(lite, "DescribeRegions", RegionName__0="computed-1"), 400, "UnknownParameter")


def test_the_body_must_be_a_form(lite):
    response = lite.post("/", data=b'{"Action": "DescribeRegions"}', content_type="application/json")
    assert "x-www-form-urlencoded" in error(response, 400, "InvalidParameterValue")


def test_parameters_that_are_not_utf8(lite):
    response = lite.post("/", data=b"Action=DescribeRegions&Version=2016-11-15&RegionName.1=%FF",
                         content_type="application/x-www-form-urlencoded")
    error(response, 400, "MalformedQueryString")


def test_the_parameter_cap_counts_query_and_body_together(lite):
    query = "&".join(f"Q{i}=1" for i in range(6000))
    body = "&".join(f"B{i}=1" for i in range(6000)).encode()
    response = lite.post(f"/?Action=DescribeRegions&Version={V}&{query}", data=body,
                         content_type="application/x-www-form-urlencoded")
    message = error(response, 400, "MalformedQueryString")
    assert "more than 10000 parameters" in message and "together" in message


def test_twenty_thousand_filters_are_refused_clearly(lite):
    body = "&".join(f"Filter.{i}.Name=region-name&Filter.{i}.Value.1=x" for i in range(1, 10001)).encode()
    response = lite.post(f"/?Action=DescribeRegions&Version={V}", data=body,
                         content_type="application/x-www-form-urlencoded")
    assert "more than 10000 parameters" in error(response, 400, "MalformedQueryString")


def test_a_body_over_the_limit(lite):
    response = lite.post("/", data=b"Action=DescribeRegions&Pad=" + b"x" * (1024 * 1024),
                         content_type="application/x-www-form-urlencoded")
    error(response, 413, "RequestEntityTooLarge")


def test_dry_run(lite):
    message = error(call(lite, "DescribeRegions", DryRun="true"), 412, "DryRunOperation")
    assert message == "Request would have succeeded, but DryRun flag is set."
    ok(call(lite, "DescribeRegions", DryRun="false"), "DescribeRegions")
    error(call(lite, "DescribeRegions", DryRun="perhaps"), 400, "InvalidParameterValue")
    # parameters are checked before the dry run answers
    error(call(lite, "DescribeRegions", DryRun="true", Colour="blue"), 400, "UnknownParameter")
    error(call(lite, "DescribeRegions", DryRun="true", RegionName__1="mars-1"), 400, "InvalidParameterValue")


def test_authentication_errors_are_ec2_xml(lite):
    response = lite.post("/", data={"Action": "DescribeRegions", "Version": V}, headers={"X-Test-Auth": "fail"})
    assert error(response, 401, "AuthFailure") == "AWS was not able to validate the provided access credentials"
    response = lite.get("/ec2/", headers={"X-Test-Auth": "fail"})
    error(response, 401, "AuthFailure")
    response = lite.put("/ec2/", headers={"X-Test-Auth": "fail"})
    error(response, 401, "AuthFailure")


def test_the_rest_api_keeps_its_json_errors(lite):
    response = lite.get("/v1/elsewhere")
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "InvalidParameterValue"


def test_an_unexpected_error_reveals_nothing(lite, monkeypatch):
    def broken(p):
        raise RuntimeError("secret detail: /var/lib/computed/db password=hunter2")

    monkeypatch.setitem(context.ACTIONS, "DescribeRegions", broken)
    response = call(lite, "DescribeRegions")
    message = error(response, 500, "InternalError")
    assert "secret" not in response.get_data(as_text=True) and message == "An internal error has occurred."


def test_an_action_that_skips_its_parameter_check_fails_closed(lite, monkeypatch):
    monkeypatch.setitem(context.ACTIONS, "DescribeRegions", lambda p: {"regionInfo": []})
    error(call(lite, "DescribeRegions", DryRun="true"), 500, "InternalError")


def test_text_is_escaped_and_kept_to_what_xml_can_carry(lite):
    message = error(call(lite, "<Describe>&\x01\"'"), 400, "InvalidAction")
    assert "<Describe>&\ufffd\"'" in message


def test_the_blueprint_stays_out_of_the_openapi_document():
    assert isinstance(api.ec2.blp, flask.Blueprint)
    assert not hasattr(api.ec2.blp, "arguments")  # not a flask-smorest blueprint


# -- DescribeRegions and DescribeAvailabilityZones --------------------------------------------

def test_describe_regions(lite):
    root = ok(call(lite, "DescribeRegions", AllRegions="true"), "DescribeRegions")
    region = root.find(f"{NS}regionInfo/{NS}item")
    assert {c.tag[len(NS):]: c.text for c in region} == {
        "regionName": "computed-1", "regionEndpoint": "localhost", "optInStatus": "opt-in-not-required"}
    root = ok(call(lite, "DescribeRegions", Filter__1__Name="region-name", Filter__1__Value__1="us-*"),
              "DescribeRegions")
    assert root.findall(f"{NS}regionInfo/{NS}item") == []
    root = ok(call(lite, "DescribeRegions", Filter__1__Name="region-name", Filter__1__Value__1="computed-*"),
              "DescribeRegions")
    assert len(root.findall(f"{NS}regionInfo/{NS}item")) == 1
    assert "us-east-1" in error(call(lite, "DescribeRegions", RegionName__1="us-east-1"), 400,
                                "InvalidParameterValue")
    error(call(lite, "DescribeRegions", Filter__1__Name="colour", Filter__1__Value__1="x"), 400,
          "InvalidParameterValue")


def test_describe_availability_zones(lite):
    lite.application.extensions["computed"].settings.availability_zone = "computed-1b"
    root = ok(call(lite, "DescribeAvailabilityZones"), "DescribeAvailabilityZones")
    zone = root.find(f"{NS}availabilityZoneInfo/{NS}item")
    assert zone.find(f"{NS}zoneName").text == "computed-1b"
    assert zone.find(f"{NS}regionName").text == "computed-1"
    assert zone.find(f"{NS}zoneState").text == "available"
    zone_id = zone.find(f"{NS}zoneId").text
    ok(call(lite, "DescribeAvailabilityZones", ZoneName__1="computed-1b", ZoneId__1=zone_id),
       "DescribeAvailabilityZones")
    root = ok(call(lite, "DescribeAvailabilityZones", Filter__1__Name="state", Filter__1__Value__1="impaired"),
              "DescribeAvailabilityZones")
    assert root.findall(f"{NS}availabilityZoneInfo/{NS}item") == []
    error(call(lite, "DescribeAvailabilityZones", ZoneName__1="computed-1a"), 400, "InvalidParameterValue")
    error(call(lite, "DescribeAvailabilityZones", ZoneId__1="use1-az1"), 400, "InvalidParameterValue")


# -- DescribeInstanceTypes ---------------------------------------------------------------------

def type_names(root) -> list[str]:
    return [e.text for e in root.findall(f"{NS}instanceTypeSet/{NS}item/{NS}instanceType")]


def test_describe_instance_types(lite):
    root = ok(call(lite, "DescribeInstanceTypes"), "DescribeInstanceTypes")
    assert type_names(root) == ["t3.nano", "t3.micro", "t3.small", "t3.medium", "t3.large"]
    micro = root.findall(f"{NS}instanceTypeSet/{NS}item")[1]
    assert micro.find(f"{NS}vCpuInfo/{NS}defaultVCpus").text == "2"
    assert micro.find(f"{NS}memoryInfo/{NS}sizeInMiB").text == "1024"
    assert micro.find(f"{NS}currentGeneration").text == "true"
    root = ok(call(lite, "DescribeInstanceTypes", InstanceType__1="t3.small", InstanceType__2="t3.nano"),
              "DescribeInstanceTypes")
    assert type_names(root) == ["t3.small", "t3.nano"]
    assert "m5.huge" in error(call(lite, "DescribeInstanceTypes", InstanceType__1="m5.huge"), 400,
                              "InvalidInstanceType")


def test_describe_instance_types_filters(lite):
    def names(**filters):
        return type_names(ok(call(lite, "DescribeInstanceTypes", **filters), "DescribeInstanceTypes"))

    assert names(Filter__1__Name="instance-type", Filter__1__Value__1="t3.*l*") == ["t3.small", "t3.large"]
    assert names(Filter__1__Name="memory-info.size-in-mib", Filter__1__Value__1="512",
                 Filter__1__Value__2="4096") == ["t3.nano", "t3.medium"]
    assert names(Filter__1__Name="vcpu-info.default-vcpus", Filter__1__Value__1="4") == []
    assert names(Filter__1__Name="current-generation", Filter__1__Value__1="true",
                 Filter__2__Name="instance-type", Filter__2__Value__1="t3.micro") == ["t3.micro"]
    error(call(lite, "DescribeInstanceTypes", Filter__1__Name="price", Filter__1__Value__1="1"), 400,
          "InvalidParameterValue")


def test_describe_instance_types_page_limits(lite):
    root = ok(call(lite, "DescribeInstanceTypes", MaxResults="5"), "DescribeInstanceTypes")
    assert len(type_names(root)) == 5 and root.find(f"{NS}nextToken") is None  # all five fit
    error(call(lite, "DescribeInstanceTypes", MaxResults="4"), 400, "InvalidParameterValue")
    error(call(lite, "DescribeInstanceTypes", MaxResults="101"), 400, "InvalidParameterValue")
    error(call(lite, "DescribeInstanceTypes", MaxResults="many"), 400, "InvalidParameterValue")
    error(call(lite, "DescribeInstanceTypes", NextToken="nonsense"), 400, "InvalidParameterValue")


def test_describe_instance_types_pages(lite):
    lite.application.extensions["computed"].sizes = SizeCatalog(
        [Size(f"s{i:02d}", 1, 512, 8, Decimal("0.01")) for i in range(12)])
    seen, token = [], None
    while True:
        root = ok(call(lite, "DescribeInstanceTypes", MaxResults="5", **({"NextToken": token} if token else {})),
                  "DescribeInstanceTypes")
        seen += type_names(root)
        if root.find(f"{NS}nextToken") is None:
            break
        token = root.find(f"{NS}nextToken").text
    assert seen == [f"s{i:02d}" for i in range(12)]


# -- DescribeImages ----------------------------------------------------------------------------

def test_describe_images(lite, publish_fake):
    store = lite.application.extensions["computed"].images
    root = ok(call(lite, "DescribeImages"), "DescribeImages")
    assert root.findall(f"{NS}imagesSet/{NS}item") == []
    first = publish_fake(store, "debian-12-podman")
    publish_fake(store, "alpine-3")
    root = ok(call(lite, "DescribeImages"), "DescribeImages")
    images = root.findall(f"{NS}imagesSet/{NS}item")
    assert [i.find(f"{NS}name").text for i in images] == ["alpine-3", "debian-12-podman"]
    debian = images[1]
    wanted = ami_id("debian-12-podman", first.manifest.version)
    assert re.fullmatch(r"ami-[0-9a-f]{17}", wanted)
    assert debian.find(f"{NS}imageId").text == wanted
    assert debian.find(f"{NS}imageState").text == "available"
    assert debian.find(f"{NS}architecture").text == "x86_64"
    assert debian.find(f"{NS}creationDate").text == "2024-01-01T00:00:00.000Z"
    assert debian.find(f"{NS}isPublic").text == "true"

    root = ok(call(lite, "DescribeImages", ImageId__1=wanted), "DescribeImages")
    assert [i.text for i in root.findall(f"{NS}imagesSet/{NS}item/{NS}imageId")] == [wanted]
    root = ok(call(lite, "DescribeImages", Filter__1__Name="name", Filter__1__Value__1="debian-*"), "DescribeImages")
    assert [i.text for i in root.findall(f"{NS}imagesSet/{NS}item/{NS}name")] == ["debian-12-podman"]
    root = ok(call(lite, "DescribeImages", Owner__1="computed"), "DescribeImages")
    assert len(root.findall(f"{NS}imagesSet/{NS}item")) == 2
    root = ok(call(lite, "DescribeImages", Owner__1="self"), "DescribeImages")
    assert root.findall(f"{NS}imagesSet/{NS}item") == []

    error(call(lite, "DescribeImages", ImageId__1="ami-123"), 400, "InvalidAMIID.Malformed")
    error(call(lite, "DescribeImages", ImageId__1="debian-12-podman"), 400, "InvalidAMIID.Malformed")
    error(call(lite, "DescribeImages", ImageId__1="ami-" + "0" * 17), 400, "InvalidAMIID.NotFound")
    error(call(lite, "DescribeImages", Filter__1__Name="colour", Filter__1__Value__1="x"), 400,
          "InvalidParameterValue")


def test_an_ami_id_is_stable_per_name_and_version():
    assert ami_id("debian-12-podman", "1.0.0") == ami_id("debian-12-podman", "1.0.0")
    assert ami_id("debian-12-podman", "1.0.0") != ami_id("debian-12-podman", "1.0.1")
    assert ami_id("debian-12-podman", "1.0.0") != ami_id("debian-12-docker", "1.0.0")
