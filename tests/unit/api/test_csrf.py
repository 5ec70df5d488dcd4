"""Cross-site requests (api.csrf), through the Flask test client (the browser itself:
tests/browser/test_cross_site.py).

- A request that may change something, with a browser's sign that another site's page sent
  it (``Sec-Fetch-Site: cross-site`` / ``same-site``, an ``Origin`` not the service's), is
  403 ``CrossSiteRequest`` on the REST API, the EC2 API (GET or POST) and the console's
  login, and changes nothing; reads are answered, and same-origin pages, typed URLs and
  clients that send neither header change things as before.
- HTTP Basic authenticates EC2's read-only actions only.
- No 401 carries a ``WWW-Authenticate: Basic`` challenge.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import urlencode

import pytest

from api.csrf import BASIC_ON_EC2

EC2_VERSION = "2016-11-15"
FOREIGN = [{"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
           {"Origin": "http://127.0.0.2:9000"}, {"Origin": "http://localhost:9000"}, {"Origin": "null"},
           {"Origin": "https://localhost"},  # the test client's host, another scheme
           {"Sec-Fetch-Site": "cross-site", "Origin": "http://localhost"}]
#: what a page of the service's own origin, the user's typing and non-browser clients send
OWN = [{}, {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}, {"Origin": "http://localhost"},
       {"Origin": "http://localhost:80"}, {"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost"}]


def ec2_query(action: str, **params) -> str:
    return urlencode({"Action": action, "Version": EC2_VERSION, **params})


def ec2_error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    root = ET.fromstring(response.get_data())
    assert root.find("Errors/Error/Code").text == code, response.get_data(as_text=True)
    return root.find("Errors/Error/Message").text


def state(client, iid: str) -> str:
    response = client.get(f"/v1/instances/{iid}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["state"]["name"]


@pytest.fixture
def running(client, wait):
    """The id of a running instance of the test account."""
    response = client.post("/v1/instances", json={"size": "t3.micro"})
    assert response.status_code == 202, response.get_data(as_text=True)
    iid = response.get_json()["instances"][0]["id"]
    wait()
    assert state(client, iid) == "running"
    return iid


def test_changes_another_sites_page_sends_are_refused(client, app, running, wait, expect_error, case):
    svc = app.extensions["computed"]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for headers in FOREIGN:
        with case(f"REST {headers}"):
            for method, path, body in [("POST", f"/v1/instances/{running}/stop", None),
                                       ("DELETE", f"/v1/instances/{running}", None),
                                       ("POST", "/v1/instances", {"size": "t3.micro"}),
                                       ("POST", "/v1/keypairs", {"name": "csrf"})]:
                response = client.open(path, method=method, json=body, headers=headers)
                assert "another site" in expect_error(response, 403, "CrossSiteRequest")
        with case(f"EC2 {headers}"):
            for action, params in [("StopInstances", {"InstanceId.1": running}),
                                   ("TerminateInstances", {"InstanceId.1": running}),
                                   ("RunInstances", {"ImageId": "debian-12-podman", "InstanceType": "t3.micro",
                                                     "MinCount": "1", "MaxCount": "1"}),
                                   ("NoSuchAction", {})]:
                for path in ("/", "/ec2/"):
                    ec2_error(client.get(f"{path}?{ec2_query(action, **params)}", headers=headers),
                              403, "CrossSiteRequest")
                    ec2_error(client.post(path, data=ec2_query(action, **params), headers={**headers, **form}),
                              403, "CrossSiteRequest")
            # a read-only Action in the query does not carry a changing one in the body
            ec2_error(client.post(f"/?{ec2_query('DescribeInstances')}",
                                  data=ec2_query("StopInstances", **{"InstanceId.1": running}),
                                  headers={**headers, **form}), 403, "CrossSiteRequest")
        with case(f"console login {headers}"):
            key_id, secret = app.config["TEST_AUTH"]
            response = client.post("/console/session", json={"access_key_id": key_id, "secret_access_key": secret},
                                   auth=None, headers={**headers, "X-Computed-Console": "1"})
            expect_error(response, 403, "CrossSiteRequest")
            assert "Set-Cookie" not in response.headers
    wait()
    assert state(client, running) == "running"
    assert svc.instances.count() == 1
    assert client.get("/v1/keypairs").get_json()["key_pairs"] == []


def test_reads_from_another_sites_page_are_answered(client, running, case):
    for headers in FOREIGN:
        with case(str(headers)):
            assert client.get("/v1/instances", headers=headers).status_code == 200
            assert client.get(f"/v1/instances/{running}", headers=headers).status_code == 200
            described = client.get(f"/?{ec2_query('DescribeInstances')}", headers=headers)
            assert described.status_code == 200 and running.encode() in described.get_data()


def test_own_pages_and_other_clients_still_change_things(client, running, wait, case):
    for headers in OWN:
        with case(str(headers)):
            response = client.post(f"/v1/instances/{running}/reboot", headers=headers)
            assert response.status_code == 202, response.get_data(as_text=True)
            wait()
    stopped = client.post(f"/v1/instances/{running}/stop", headers={"Sec-Fetch-Site": "same-origin"})
    assert stopped.status_code == 202
    wait()
    assert state(client, running) == "stopped"


def test_basic_authenticates_only_read_only_ec2_actions(client, app, running, wait, case):
    svc = app.extensions["computed"]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for action, params in [("StopInstances", {"InstanceId.1": running}),
                           ("TerminateInstances", {"InstanceId.1": running}),
                           ("RebootInstances", {"InstanceId.1": running}),
                           ("RunInstances", {"ImageId": "debian-12-podman", "InstanceType": "t3.micro",
                                             "MinCount": "1", "MaxCount": "1"}),
                           ("CreateKeyPair", {"KeyName": "csrf"}), ("NoSuchAction", {})]:
        with case(action):
            for path in ("/", "/ec2/"):
                get = client.get(f"{path}?{ec2_query(action, **params)}")
                assert ec2_error(get, 401, "AuthFailure") == BASIC_ON_EC2
                post = client.post(path, data=ec2_query(action, **params), headers=form)
                assert ec2_error(post, 401, "AuthFailure") == BASIC_ON_EC2
                assert "WWW-Authenticate" not in get.headers and "WWW-Authenticate" not in post.headers
    # with no Action at all, too (the EC2 API would say MissingAction to a signed request)
    assert ec2_error(client.get("/"), 401, "AuthFailure") == BASIC_ON_EC2
    for action in ("DescribeInstances", "DescribeInstanceStatus", "DescribeKeyPairs", "DescribeImages"):
        with case(action):
            assert client.get(f"/?{ec2_query(action)}").status_code == 200
    output = client.get(f"/?{ec2_query('GetConsoleOutput', InstanceId=running)}")
    assert output.status_code == 200, output.get_data(as_text=True)
    wait()
    assert state(client, running) == "running"
    assert svc.instances.count() == 1


def test_no_answer_invites_the_browsers_basic_dialog(client, case):
    bad = ("AKCD" + "Q" * 16, "w" * 40)
    for path in ("/v1/instances", "/v1/sizes", "/console/session", "/metrics", "/v1/nothing-here",
                 f"/?{ec2_query('DescribeInstances')}", f"/ec2/?{ec2_query('DescribeInstances')}"):
        for auth in (None, bad):
            with case(f"{path} {auth}"):
                response = client.get(path, auth=auth)
                assert response.status_code in (401, 404), response.get_data(as_text=True)
                assert "basic" not in response.headers.get("WWW-Authenticate", "").lower(), response.headers
