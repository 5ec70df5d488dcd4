"""The AWS CLI (``aws``, installed with the test extra) against a real server on a loopback
port, unchanged but for ``--endpoint-url``: it signs with SigV4 and parses our XML. The
instance lives on libvirt's test driver, so it runs at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.http_server import ThreadedServer

AWS = Path(sys.executable).with_name("aws")


@pytest.fixture
def endpoint(make_app):
    """(URL, Service) of the app served by waitress from a thread."""
    app = make_app()
    with ThreadedServer(app) as server:
        yield f"{server.url}/", app.extensions["computed"]


@pytest.fixture
def aws(endpoint, tmp_path):
    """aws(*args) -> the parsed JSON output of ``aws ec2 ARGS --endpoint-url URL``."""
    url, svc = endpoint
    creds = svc.accounts.create("aws-cli")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "AWS_ACCESS_KEY_ID": creds.access_key_id, "AWS_SECRET_ACCESS_KEY": creds.secret_access_key,
           "AWS_DEFAULT_REGION": svc.settings.region, "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_PAGER": "", "AWS_MAX_ATTEMPTS": "1"}

    def run(*args: str, expect_ok: bool = True):
        done = subprocess.run([str(AWS), "ec2", *args, "--endpoint-url", url, "--output", "json"],
                              env=env, capture_output=True, text=True, timeout=120)
        if not expect_ok:
            return done
        assert done.returncode == 0, f"aws ec2 {' '.join(args)}: {done.stderr}"
        return json.loads(done.stdout) if done.stdout.strip() else None

    run.creds = creds
    return run


def test_launch_describe_terminate(aws, endpoint):
    _, svc = endpoint
    [image] = aws("describe-images")["Images"]
    assert image["ImageId"].startswith("ami-") and image["Name"] == "debian-12-podman"

    launched = aws("run-instances", "--image-id", image["ImageId"], "--instance-type", "t3.micro", "--count", "1",
                   "--tag-specifications", "ResourceType=instance,Tags=[{Key=env,Value=cli}]")
    [inst] = launched["Instances"]
    iid = inst["InstanceId"]
    assert inst["State"] == {"Code": 0, "Name": "pending"}
    assert inst["InstanceType"] == "t3.micro" and inst["ImageId"] == image["ImageId"]

    deadline = time.monotonic() + 10
    while True:
        [reservation] = aws("describe-instances", "--instance-ids", iid)["Reservations"]
        [described] = reservation["Instances"]
        if described["State"]["Name"] == "running" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert described["State"] == {"Code": 16, "Name": "running"}
    assert reservation["OwnerId"] == aws.creds.account_id
    tags = {t["Key"]: t["Value"] for t in described["Tags"]}
    assert tags["env"] == "cli" and tags["computed:ssh-port"].isdigit()
    assert described["Placement"]["AvailabilityZone"] == svc.settings.availability_zone

    by_tag = aws("describe-instances", "--filters", "Name=tag:env,Values=cli", "Name=instance-state-name,Values=running")
    assert [i["InstanceId"] for r in by_tag["Reservations"] for i in r["Instances"]] == [iid]

    [change] = aws("terminate-instances", "--instance-ids", iid)["TerminatingInstances"]
    assert change["InstanceId"] == iid
    assert change["PreviousState"]["Name"] == "running"
    assert change["CurrentState"]["Name"] in ("shutting-down", "terminated")
    assert svc.worker.idle(60)
    [reservation] = aws("describe-instances", "--instance-ids", iid)["Reservations"]
    assert reservation["Instances"][0]["State"] == {"Code": 48, "Name": "terminated"}


def test_errors_come_back_as_the_cli_shows_them(aws):
    def fails(*args: str) -> str:
        done = aws(*args, expect_ok=False)
        assert done.returncode != 0, done.stdout
        return done.stderr

    assert "InvalidInstanceID.NotFound" in fails("describe-instances", "--instance-ids", "i-0123456789abcdef0")
    assert "InvalidAMIID.NotFound" in fails("run-instances", "--image-id", "ami-0123456789abcdef0",
                                            "--instance-type", "t3.micro", "--count", "1")
    [image] = aws("describe-images")["Images"]
    assert "DryRunOperation" in fails("run-instances", "--image-id", image["ImageId"], "--instance-type", "t3.micro",
                                      "--count", "1", "--dry-run")
    assert aws("describe-instances")["Reservations"] == []  # the dry run launched nothing


def test_a_wrong_secret_is_refused(aws, endpoint, tmp_path):
    url, _ = endpoint
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "AWS_PAGER": "",
           "AWS_ACCESS_KEY_ID": aws.creds.access_key_id, "AWS_SECRET_ACCESS_KEY": "x" * 40,
           "AWS_DEFAULT_REGION": "computed-1", "AWS_MAX_ATTEMPTS": "1",
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    done = subprocess.run([str(AWS), "ec2", "describe-instances", "--endpoint-url", url], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "AuthFailure" in done.stderr
