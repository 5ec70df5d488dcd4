"""The EC2 Query API in the whole app on a real server: authentication's errors in EC2's
XML, GET with a signed query string or a presigned URL, and the REST API beside it."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

from .helpers import expect, raw_error

NS = "{http://ec2.amazonaws.com/doc/2016-11-15/}"


def fetch(url: str, data: bytes | None = None, headers: dict | None = None, method: str | None = None):
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_requests_without_credentials_get_ec2_errors(endpoint):
    for path in ("", "ec2/"):
        status, headers, body = fetch(endpoint.url + path + "?Action=DescribeRegions&Version=2016-11-15")
        assert headers["Content-Type"] == "text/xml;charset=UTF-8"
        assert raw_error((status, body), 401, "AuthFailure")
    status, _, body = fetch(endpoint.url, data=b"Action=DescribeRegions&Version=2016-11-15",
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    raw_error((status, body), 401, "AuthFailure")
    status, _, body = fetch(endpoint.url, data=b"Action=DescribeRegions", method="PUT")
    raw_error((status, body), 401, "AuthFailure")


def test_wrong_secret_and_unknown_key(endpoint):
    wrong = endpoint.client("mallory", secret="x" * 40)
    assert "credentials" in expect("AuthFailure", 401, wrong.describe_regions)
    expect("AuthFailure", 401, wrong.describe_key_pairs)


def test_signed_get(endpoint, ec2):
    status, body = endpoint.raw(ec2, {"Action": "DescribeAvailabilityZones", "Version": "2016-11-15"},
                                method="GET", path="/ec2/")
    assert status == 200, body
    root = ET.fromstring(body)
    assert root.tag == f"{NS}DescribeAvailabilityZonesResponse"
    assert root.find(f"{NS}availabilityZoneInfo/{NS}item/{NS}zoneName").text == "computed-1a"


def test_presigned_url(endpoint, ec2):
    url = ec2.generate_presigned_url("describe_regions", Params={}, ExpiresIn=60, HttpMethod="GET")
    assert "X-Amz-Signature=" in url
    status, _, body = fetch(url)
    assert status == 200, body
    assert ET.fromstring(body).find(f"{NS}regionInfo/{NS}item/{NS}regionName").text == "computed-1"


def test_an_unknown_action_and_version_after_authentication(endpoint, ec2):
    raw_error(endpoint.raw(ec2, {"Action": "DescribeVolumes", "Version": "2016-11-15"}), 400, "InvalidAction")
    raw_error(endpoint.raw(ec2, {"Action": "DescribeRegions", "Version": "2015-10-01"}), 400, "NoSuchVersion")
    raw_error(endpoint.raw(ec2, {"Version": "2016-11-15"}), 400, "MissingAction")


def test_the_rest_api_is_unchanged_beside_it(endpoint, ec2):
    creds = ec2.creds
    basic = base64.b64encode(f"{creds.access_key_id}:{creds.secret_access_key}".encode()).decode()
    status, headers, body = fetch(endpoint.url + "v1/instances/i-nope", headers={"Authorization": f"Basic {basic}"})
    assert status == 400 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "InvalidInstanceID.Malformed"
    status, _, body = fetch(endpoint.url + "openapi.json")
    assert status == 200
    paths = json.loads(body)["paths"]
    assert "/v1/instances" in paths and "/" not in paths and "/ec2/" not in paths


def test_regions_and_zones_come_from_the_settings(serve):
    endpoint = serve(region="lab-2", availability_zone="lab-2c")
    ec2 = endpoint.client()
    assert [r["RegionName"] for r in ec2.describe_regions()["Regions"]] == ["lab-2"]
    zone = ec2.describe_availability_zones()["AvailabilityZones"][0]
    assert (zone["ZoneName"], zone["RegionName"]) == ("lab-2c", "lab-2")
