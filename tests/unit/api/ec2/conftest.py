"""Fixtures for the EC2 Query API tests.

- ``lite``: a small Flask app with only the EC2 blueprint over a stand-in service (sizes,
  an empty image store, settings) and a fixed caller: for parsing and XML, no libvirt.
- ``serve`` / ``endpoint`` / ``ec2``: the whole app of ``tests/unit/conftest.py``
  (libvirt's ``test:///default`` driver, which boots at once) served on a loopback port by
  werkzeug, and boto3 clients signing with SigV4 as accounts of that app's store.
"""

from __future__ import annotations

import threading
import time
import types
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials as BotoCredentials
from flask import Flask, g, request
from werkzeug.serving import make_server

import api.ec2
from api import errors as rest_errors
from api.app import MAX_BODY
from computed.accounts.registry import Caller
from computed.errors import AuthFailure, InvalidParameterValue
from computed.service import Service
from computed.compute.sizes import SizeCatalog
from images.library import ImageLibrary

REGION = "computed-1"
CALLER = Caller("123456789012", "lite", False)


@pytest.fixture
def lite(tmp_path):
    """A test client of an app with the EC2 blueprint and the REST API's JSON error handlers
    (which the blueprint's must win over), over a stand-in service
    (``lite.application.extensions["computed"]``). Its authentication hook fails a request
    with the header ``X-Test-Auth: fail`` as the real one does."""
    app = Flask("ec2-lite")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    svc = types.SimpleNamespace(
        settings=types.SimpleNamespace(region=REGION, availability_zone="computed-1a", default_image="none"),
        sizes=SizeCatalog(), images=ImageLibrary(tmp_path / "images"))
    app.extensions["computed"] = svc
    rest_errors.register(app)

    @app.before_request
    def authenticate():
        if request.headers.get("X-Test-Auth") == "fail":
            raise AuthFailure("AWS was not able to validate the provided access credentials")
        g.caller = CALLER

    @app.get("/v1/elsewhere")
    def elsewhere():
        raise InvalidParameterValue("a REST error")

    app.register_blueprint(api.ec2.blp)
    return app.test_client()


# -- the whole service on a loopback port --------------------------------------------------

@dataclass
class Endpoint:
    url: str
    service: Service

    def client(self, name: str = "alice", secret: str | None = None, admin: bool = False, **options):
        """A boto3 EC2 client signed in (SigV4) as a new account NAME, with SECRET instead of
        the account's if given; ``client.caller`` and ``client.creds`` are its Caller and
        Credentials. No retries: errors come back at once."""
        creds = self.service.accounts.create(name, admin=admin)
        config = Config(retries={"total_max_attempts": 1}, **options)
        client = boto3.client("ec2", endpoint_url=self.url, region_name=self.service.settings.region, config=config,
                              aws_access_key_id=creds.access_key_id,
                              aws_secret_access_key=secret or creds.secret_access_key)
        client.caller, client.creds = creds.caller, creds
        return client

    def raw(self, client, params: dict, method: str = "POST", path: str = "/") -> tuple[int, bytes]:
        """A request boto3 would not send (it checks parameters against its model), signed
        with CLIENT's credentials: (HTTP status, body)."""
        creds = client.creds
        url = self.url.rstrip("/") + path
        body = urllib.parse.urlencode(params)
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        if method == "GET":
            url, body, headers = f"{url}?{body}", None, {}
        request = AWSRequest(method=method, url=url, data=body, headers=headers)
        SigV4Auth(BotoCredentials(creds.access_key_id, creds.secret_access_key), "ec2",
                  self.service.settings.region).add_auth(request)
        prepared = request.prepare()
        data = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
        sent = urllib.request.Request(prepared.url, data=data, headers=dict(prepared.headers), method=method)
        try:
            with urllib.request.urlopen(sent, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()


@pytest.fixture
def serve(make_app):
    """serve(**setting_changes) -> Endpoint: the whole app (EC2 blueprint included) served by
    werkzeug from a thread on a loopback port."""
    running = []

    def start(**changes) -> Endpoint:
        app = make_app(**changes)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, name="ec2-api", daemon=True)
        thread.start()
        running.append((server, thread))
        return Endpoint(f"http://127.0.0.1:{server.server_port}/", app.extensions["computed"])

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def endpoint(serve) -> Endpoint:
    return serve()


@pytest.fixture
def service(endpoint) -> Service:
    return endpoint.service


@pytest.fixture
def ec2(endpoint):
    """A boto3 EC2 client of the account "alice"."""
    return endpoint.client("alice")


@pytest.fixture
def ami(ec2) -> str:
    """The ami id of the test image (debian-12-podman 1.0.0), as DescribeImages gives it."""
    return ec2.describe_images()["Images"][0]["ImageId"]


@pytest.fixture
def wait_state(service, ec2):
    """wait_state(instance_id, state, caller=ec2.caller) -> the instance, once the core has
    it in STATE (polled for at most 10 s)."""

    def wait(instance_id: str, state: str, caller=None):
        deadline = time.monotonic() + 10
        while True:
            inst = service.instances.get(caller or ec2.caller, instance_id)
            if inst.state == state:
                return inst
            assert time.monotonic() < deadline, f"{instance_id} is {inst.state}, not {state}, after 10 s"
            time.sleep(0.02)

    return wait
