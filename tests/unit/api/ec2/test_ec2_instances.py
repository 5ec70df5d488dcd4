"""Instances through boto3 against a real server (SigV4, libvirt's test driver): the life of
an instance, RunInstances' counts, tokens and user data, DescribeInstances' filters and
pages, DescribeInstanceStatus, GetConsoleOutput, and other accounts' instances."""

from __future__ import annotations

import base64
import datetime as dt
import re

import pytest
from sqlalchemy import update

from computed.store.models import Instance
from computed.virt import ssh

from tests.unit.conftest import find_free_ports
from .helpers import expect, ids, instances, raw_error, tags


def launch(ec2, ami, **kwargs) -> dict:
    kwargs.setdefault("InstanceType", "t3.micro")
    kwargs.setdefault("MinCount", 1)
    kwargs.setdefault("MaxCount", kwargs["MinCount"])
    return ec2.run_instances(ImageId=ami, **kwargs)


def describe_one(ec2, instance_id) -> dict:
    found = instances(ec2.describe_instances(InstanceIds=[instance_id])["Reservations"])
    assert len(found) == 1
    return found[0]


# -- the life of an instance -------------------------------------------------------------------

def test_the_life_of_an_instance(ec2, service, ami, wait_state):
    ec2.create_key_pair(KeyName="deploy")
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    run = launch(ec2, ami, KeyName="deploy",
                 TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "web"}]}])
    assert run["OwnerId"] == ec2.caller.account_id
    assert re.fullmatch(r"r-[0-9a-f]{17}", run["ReservationId"])
    assert run["Groups"] == []
    [launched] = run["Instances"]
    instance_id = launched["InstanceId"]
    core = service.instances.get(ec2.caller, instance_id)
    assert launched["State"] == {"Code": 0, "Name": "pending"}
    assert launched["ImageId"] == ami
    assert launched["InstanceType"] == "t3.micro"
    assert launched["KeyName"] == "deploy"
    assert launched["AmiLaunchIndex"] == 0
    assert launched["Placement"] == {"AvailabilityZone": "computed-1a", "GroupName": "", "HostId": "local",
                                     "Tenancy": "default"}
    assert launched["PrivateDnsName"] == launched["PublicDnsName"] == core.ssh_host == "127.0.0.1"
    assert launched["PublicIpAddress"] == "127.0.0.1"
    assert tags(launched) == {"Name": "web", "computed:ssh-port": str(core.ssh_port)}
    assert before <= launched["LaunchTime"] <= dt.datetime.now(dt.UTC)
    assert launched["ClientToken"]  # boto3 sends one of its own

    running = wait_state(instance_id, "running")
    described = describe_one(ec2, instance_id)
    assert described["State"] == {"Code": 16, "Name": "running"}
    assert described["LaunchTime"] == launched["LaunchTime"]
    assert "StateReason" not in described and described["StateTransitionReason"] == ""

    stop = ec2.stop_instances(InstanceIds=[instance_id])["StoppingInstances"]
    assert stop == [{"InstanceId": instance_id, "CurrentState": {"Code": 64, "Name": "stopping"},
                     "PreviousState": {"Code": 16, "Name": "running"}}]
    wait_state(instance_id, "stopped")
    stopped = describe_one(ec2, instance_id)
    assert stopped["State"] == {"Code": 80, "Name": "stopped"}
    assert stopped["StateReason"] == {"Code": "Client.UserInitiatedShutdown", "Message": "User initiated shutdown"}
    assert re.fullmatch(r"User initiated \(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d GMT\)", stopped["StateTransitionReason"])
    again = ec2.stop_instances(InstanceIds=[instance_id])["StoppingInstances"][0]
    assert again["CurrentState"] == again["PreviousState"] == {"Code": 80, "Name": "stopped"}

    start = ec2.start_instances(InstanceIds=[instance_id])["StartingInstances"]
    assert start == [{"InstanceId": instance_id, "CurrentState": {"Code": 0, "Name": "pending"},
                      "PreviousState": {"Code": 80, "Name": "stopped"}}]
    wait_state(instance_id, "running")

    assert ec2.reboot_instances(InstanceIds=[instance_id])["ResponseMetadata"]["HTTPStatusCode"] == 200
    service.worker.idle(60)
    assert describe_one(ec2, instance_id)["State"]["Name"] == "running"

    end = ec2.terminate_instances(InstanceIds=[instance_id])["TerminatingInstances"]
    assert end == [{"InstanceId": instance_id, "CurrentState": {"Code": 32, "Name": "shutting-down"},
                    "PreviousState": {"Code": 16, "Name": "running"}}]
    wait_state(instance_id, "terminated")
    gone = describe_one(ec2, instance_id)  # terminated instances stay visible for a while
    assert gone["State"] == {"Code": 48, "Name": "terminated"}
    assert gone["PrivateDnsName"] == gone["PublicDnsName"] == "" and "PublicIpAddress" not in gone
    assert tags(gone) == {"Name": "web"}  # the port is given back
    again = ec2.terminate_instances(InstanceIds=[instance_id])["TerminatingInstances"][0]
    assert again["CurrentState"] == again["PreviousState"] == {"Code": 48, "Name": "terminated"}
    assert running.ssh_port is not None


def test_launch_time_is_iso8601_with_milliseconds(endpoint, ec2, ami):
    instance_id = ids(launch(ec2, ami))[0]
    status, body = endpoint.raw(ec2, {"Action": "DescribeInstances", "Version": "2016-11-15",
                                      "InstanceId.1": instance_id})
    assert status == 200
    assert re.search(rb"<launchTime>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z</launchTime>", body), body


def test_state_changes_of_several_instances(ec2, ami, wait_state):
    first, second = ids(launch(ec2, ami, MinCount=2))
    for i in (first, second):
        wait_state(i, "running")
    stopping = ec2.stop_instances(InstanceIds=[first, second, first])["StoppingInstances"]
    assert [s["InstanceId"] for s in stopping] == [first, second]
    assert {s["CurrentState"]["Name"] for s in stopping} == {"stopping"}


def test_incorrect_instance_state(ec2, ami, wait_state):
    instance_id = ids(launch(ec2, ami))[0]
    wait_state(instance_id, "running")
    ec2.stop_instances(InstanceIds=[instance_id])
    wait_state(instance_id, "stopped")
    assert "stopped" in expect("IncorrectInstanceState", 400, ec2.reboot_instances, InstanceIds=[instance_id])


# -- RunInstances --------------------------------------------------------------------------------

def test_min_and_max_count(ec2, ami):
    run = launch(ec2, ami, MinCount=2, MaxCount=3)
    assert [i["AmiLaunchIndex"] for i in run["Instances"]] == [0, 1, 2]
    reservations = ec2.describe_instances()["Reservations"]
    assert len(reservations) == 1 and reservations[0]["ReservationId"] == run["ReservationId"]
    assert sorted(i["AmiLaunchIndex"] for i in reservations[0]["Instances"]) == [0, 1, 2]
    expect("InvalidParameterValue", 400, launch, ec2, ami, MinCount=3, MaxCount=2)
    expect("InvalidParameterValue", 400, launch, ec2, ami, MinCount=0, MaxCount=1)
    expect("InvalidParameterValue", 400, launch, ec2, ami, MinCount=1, MaxCount=21)  # the core's limit


def test_max_count_as_far_as_capacity_allows(serve, publish_image):
    low, high = find_free_ports(2)
    endpoint = serve(ssh_ports=(low, high))  # room for two instances
    ec2 = endpoint.client()
    ami = ec2.describe_images()["Images"][0]["ImageId"]
    run = launch(ec2, ami, MinCount=1, MaxCount=3, ClientToken="fill-up")
    assert len(run["Instances"]) == 2
    # the same request again is the same launch, at the count it had
    again = launch(ec2, ami, MinCount=1, MaxCount=3, ClientToken="fill-up")
    assert ids(again) == ids(run) and endpoint.service.instances.count() == 2
    message = expect("InsufficientInstanceCapacity", 503, launch, ec2, ami, MinCount=1, MaxCount=1)
    assert "port" in message
    expect("IdempotentParameterMismatch", 400, launch, ec2, ami, InstanceType="t3.small", MinCount=1, MaxCount=3,
           ClientToken="fill-up")


def test_client_token_makes_run_instances_idempotent(ec2, service, ami):
    first = launch(ec2, ami, ClientToken="token-1", MinCount=2)
    again = launch(ec2, ami, ClientToken="token-1", MinCount=2)
    assert ids(again) == ids(first) and again["ReservationId"] == first["ReservationId"]
    assert service.instances.count() == 2
    assert all(i["ClientToken"] == "token-1" for i in again["Instances"])
    message = expect("IdempotentParameterMismatch", 400, launch, ec2, ami, ClientToken="token-1",
                     InstanceType="t3.small", MinCount=2)
    assert "token" in message
    expect("InvalidParameterValue", 400, launch, ec2, ami, ClientToken="x" * 65)
    assert service.instances.count() == 2


def test_a_client_token_is_the_accounts_own(endpoint, ec2, ami):
    bob = endpoint.client("bob")
    mine = launch(ec2, ami, ClientToken="shared")
    theirs = launch(bob, ami, ClientToken="shared", InstanceType="t3.small")
    assert ids(mine) != ids(theirs)


def test_user_data_round_trip(endpoint, ec2, service, ami):
    script = "#!/bin/sh\necho 'héllo' > /tmp/out\n"
    instance_id = ids(launch(ec2, ami, UserData=script))[0]  # boto3 sends it base64 encoded
    assert service.instances.get(ec2.caller, instance_id).user_data == script.encode()
    attribute = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    assert attribute["InstanceId"] == instance_id
    assert base64.b64decode(attribute["UserData"]["Value"]).decode() == script
    kind = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="instanceType")
    assert kind["InstanceType"] == {"Value": "t3.micro"}
    protection = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="disableApiTermination")
    assert protection["DisableApiTermination"] == {"Value": False}
    expect("InvalidParameterValue", 400, ec2.describe_instance_attribute, InstanceId=instance_id,
           Attribute="kernel")
    without = ids(launch(ec2, ami))[0]
    assert ec2.describe_instance_attribute(InstanceId=without, Attribute="userData")["UserData"] == {}

    binary = bytes(range(256))
    instance_id = ids(launch(ec2, ami, UserData=binary))[0]
    assert service.instances.get(ec2.caller, instance_id).user_data == binary
    base = {"Action": "RunInstances", "Version": "2016-11-15", "ImageId": ami, "InstanceType": "t3.micro",
            "MinCount": "1", "MaxCount": "1"}
    assert "UserData" in raw_error(endpoint.raw(ec2, base | {"UserData": "not base64!"}), 400,
                                   "InvalidParameterValue")
    expect("InvalidParameterValue", 400, launch, ec2, ami, UserData=b"x" * (16 * 1024 + 1))


def test_image_id_is_an_ami_id_or_an_image_name(ec2, service, ami, publish_image):
    assert launch(ec2, ami)["Instances"][0]["ImageId"] == ami
    by_name = launch(ec2, "debian-12-podman")["Instances"][0]
    assert by_name["ImageId"] == ami
    assert service.instances.get(ec2.caller, by_name["InstanceId"]).image == "debian-12-podman"
    expect("InvalidAMIID.NotFound", 400, launch, ec2, "ami-" + "0" * 17)
    expect("InvalidAMIID.NotFound", 400, launch, ec2, "no-such-image")
    expect("InvalidAMIID.Malformed", 400, launch, ec2, "ami-xyz")
    # a new build of the image is a new ami id; the old one is gone with it
    publish_image(version="1.0.1")
    newer = ec2.describe_images()["Images"][0]["ImageId"]
    assert newer != ami
    expect("InvalidAMIID.NotFound", 400, launch, ec2, ami)
    assert launch(ec2, newer)["Instances"][0]["ImageId"] == newer


def test_run_instances_errors(endpoint, ec2, ami):
    expect("InvalidInstanceType", 400, launch, ec2, ami, InstanceType="m9.enormous")
    expect("InvalidKeyPair.NotFound", 400, launch, ec2, ami, KeyName="nobody")
    expect("InvalidParameterValue", 400, launch, ec2, ami,
           TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "a", "Value": "b"}]}])
    expect("InvalidParameterValue", 400, launch, ec2, ami,
           TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "aws:x", "Value": "b"}]}])
    expect("InvalidParameterValue", 400, launch, ec2, ami,
           TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "computed:ssh-port", "Value": "1"}]}])
    base = {"Action": "RunInstances", "Version": "2016-11-15", "ImageId": ami, "MinCount": "1", "MaxCount": "1"}
    assert "InstanceType" in raw_error(endpoint.raw(ec2, base), 400, "MissingParameter")
    assert "MaxCount" in raw_error(endpoint.raw(ec2, base | {"InstanceType": "t3.micro", "MaxCount": "one"}),
                                   400, "InvalidParameterValue")
    assert "SubnetId" in raw_error(endpoint.raw(ec2, base | {"InstanceType": "t3.micro", "SubnetId": "s-1"}),
                                   400, "UnknownParameter")
    assert endpoint.service.instances.count() == 0


def test_run_instances_dry_run(ec2, service, ami):
    expect("DryRunOperation", 412, launch, ec2, ami, DryRun=True)
    expect("InvalidInstanceType", 400, launch, ec2, ami, DryRun=True, InstanceType="m9.enormous")
    expect("InvalidKeyPair.NotFound", 400, launch, ec2, ami, DryRun=True, KeyName="nobody")
    expect("InvalidAMIID.NotFound", 400, launch, ec2, "ami-" + "0" * 17, DryRun=True)
    assert service.instances.count() == 0


# -- DescribeInstances -----------------------------------------------------------------------------

@pytest.fixture
def fleet(ec2, ami, wait_state):
    """Three instances: a (t3.micro, key k1, env=prod, Name=a), b (t3.small, env=dev, Name=b)
    running; c (t3.micro, no tags) stopped."""
    ec2.create_key_pair(KeyName="k1")

    def one(name, **kwargs):
        specs = ([{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}] + kwargs.pop("tags")}]
                 if "tags" in kwargs else [])
        return ids(launch(ec2, ami, TagSpecifications=specs, **kwargs))[0]

    a = one("a", KeyName="k1", tags=[{"Key": "env", "Value": "prod"}])
    b = one("b", InstanceType="t3.small", tags=[{"Key": "env", "Value": "dev"}])
    c = one("c")
    for i in (a, b, c):
        wait_state(i, "running")
    ec2.stop_instances(InstanceIds=[c])
    wait_state(c, "stopped")
    return {"a": a, "b": b, "c": c}


def test_describe_instances_filters(ec2, ami, fleet):
    a, b, c = fleet["a"], fleet["b"], fleet["c"]

    def found(*filters) -> set[str]:
        flt = [{"Name": name, "Values": list(values)} for name, *values in filters]
        return set(ids(ec2.describe_instances(Filters=flt)))

    assert found() == {a, b, c}
    assert found(("instance-id", a, c)) == {a, c}
    assert found(("instance-state-name", "running")) == {a, b}
    assert found(("instance-state-name", "stopped", "terminated")) == {c}
    assert found(("instance-state-code", "80")) == {c}
    assert found(("instance-state-code", "16"), ("instance-state-name", "running", "stopped")) == {a, b}
    assert found(("instance-type", "t3.micro")) == {a, c}
    assert found(("image-id", ami)) == {a, b, c}
    assert found(("image-id", "ami-" + "0" * 17)) == set()
    assert found(("key-name", "k1")) == {a}
    assert found(("tag:env", "prod")) == {a}
    assert found(("tag:env", "")) == set()
    assert found(("tag-key", "env")) == {a, b}
    assert found(("tag-key", "Name"), ("instance-type", "t3.micro")) == {a}
    assert found(("availability-zone", "computed-1a")) == {a, b, c}
    assert found(("availability-zone", "us-east-1a")) == set()
    assert set(ids(ec2.describe_instances(InstanceIds=[a, b], Filters=[
        {"Name": "instance-id", "Values": [b, c]}]))) == {b}
    assert set(ids(ec2.describe_instances(InstanceIds=[a], Filters=[
        {"Name": "instance-id", "Values": [c]}]))) == set()

    # several values of one filter: any of them (OR); several filters: all of them (AND)
    assert found(("instance-type", "t3.micro", "t3.small")) == {a, b, c}
    assert found(("instance-type", "t3.small", "t3.nano")) == {b}
    assert found(("tag:env", "prod", "dev")) == {a, b}
    assert found(("tag:env", "prod", "dev"), ("tag:Name", "b", "c")) == {b}
    assert found(("tag-key", "nope", "env")) == {a, b}
    assert found(("key-name", "k1", "k2")) == {a}
    assert found(("image-id", "ami-" + "0" * 17, ami)) == {a, b, c}
    expect("InvalidParameterValue", 400, found, ("instance-state-code", "sixteen"))
    assert "'vpc-id' is invalid" in expect("InvalidParameterValue", 400, found, ("vpc-id", "vpc-1"))


def test_describe_instances_by_id(ec2, ami, fleet):
    assert ids(ec2.describe_instances(InstanceIds=[fleet["b"]])) == [fleet["b"]]
    missing = "i-" + "0" * 17
    assert missing in expect("InvalidInstanceID.NotFound", 400, ec2.describe_instances,
                             InstanceIds=[fleet["a"], missing])
    expect("InvalidInstanceID.Malformed", 400, ec2.describe_instances, InstanceIds=["i-123"])
    expect("InvalidInstanceID.Malformed", 400, ec2.describe_instances, InstanceIds=["web-1"])
    expect("InvalidParameterCombination", 400, ec2.describe_instances, InstanceIds=[fleet["a"]], MaxResults=5)


def test_describe_instances_pages(ec2, ami):
    launched = ids(launch(ec2, ami, MinCount=7))
    first = ec2.describe_instances(MaxResults=5)
    assert len(ids(first)) == 5 and first["NextToken"]
    second = ec2.describe_instances(MaxResults=5, NextToken=first["NextToken"])
    assert len(ids(second)) == 2 and "NextToken" not in second
    assert sorted(ids(first) + ids(second)) == sorted(launched)
    # one reservation, split over the pages
    assert {r["ReservationId"] for r in first["Reservations"] + second["Reservations"]} == {
        first["Reservations"][0]["ReservationId"]}
    paged = [i for page in ec2.get_paginator("describe_instances").paginate(PaginationConfig={"PageSize": 5})
             for i in ids(page)]
    assert sorted(paged) == sorted(launched)
    filtered = ec2.describe_instances(MaxResults=5, Filters=[{"Name": "instance-type", "Values": ["t3.micro"]}])
    assert len(ids(filtered)) == 5
    expect("InvalidParameterValue", 400, ec2.describe_instances, MaxResults=4)
    expect("InvalidParameterValue", 400, ec2.describe_instances, MaxResults=1001)
    expect("InvalidParameterValue", 400, ec2.describe_instances, NextToken="garbage")


def test_describe_instances_dry_run(ec2, ami):
    expect("DryRunOperation", 412, ec2.describe_instances, DryRun=True)
    expect("InvalidInstanceID.NotFound", 400, ec2.describe_instances, DryRun=True, InstanceIds=["i-" + "0" * 17])


# -- DescribeInstanceStatus, GetConsoleOutput ------------------------------------------------------

def test_describe_instance_status(ec2, service, fleet):
    a, b, c = fleet["a"], fleet["b"], fleet["c"]
    statuses = {s["InstanceId"]: s for s in ec2.describe_instance_status()["InstanceStatuses"]}
    assert set(statuses) == {a, b}  # running ones, unless asked for all
    one = statuses[a]
    assert one["AvailabilityZone"] == "computed-1a"
    assert one["InstanceState"] == {"Code": 16, "Name": "running"}
    assert one["SystemStatus"] == {"Status": "ok", "Details": [{"Name": "reachability", "Status": "passed"}]}
    # the test driver runs no guest, so SSH never answers: the instance is still initializing
    assert one["InstanceStatus"] == {"Status": "initializing",
                                     "Details": [{"Name": "reachability", "Status": "initializing"}]}
    with service.db.session() as s:
        s.execute(update(Instance).where(Instance.id == a).values(ready_ssh=True))
    ready = ec2.describe_instance_status(InstanceIds=[a])["InstanceStatuses"][0]
    assert ready["InstanceStatus"] == {"Status": "ok", "Details": [{"Name": "reachability", "Status": "passed"}]}

    every = {s["InstanceId"]: s for s in ec2.describe_instance_status(IncludeAllInstances=True)["InstanceStatuses"]}
    assert set(every) == {a, b, c}
    assert every[c]["InstanceStatus"] == every[c]["SystemStatus"] == {"Status": "not-applicable"}
    stopped = ec2.describe_instance_status(IncludeAllInstances=True, Filters=[
        {"Name": "instance-state-name", "Values": ["stopped"]}])["InstanceStatuses"]
    assert [s["InstanceId"] for s in stopped] == [c]
    assert ec2.describe_instance_status(Filters=[
        {"Name": "instance-state-name", "Values": ["stopped"]}])["InstanceStatuses"] == []
    assert ec2.describe_instance_status(InstanceIds=[c])["InstanceStatuses"] == []
    page = ec2.describe_instance_status(MaxResults=5, IncludeAllInstances=True)
    assert len(page["InstanceStatuses"]) == 3 and "NextToken" not in page
    expect("InvalidInstanceID.NotFound", 400, ec2.describe_instance_status, InstanceIds=["i-" + "0" * 17])
    expect("InvalidParameterValue", 400, ec2.describe_instance_status,
           Filters=[{"Name": "instance-type", "Values": ["t3.micro"]}])
    expect("DryRunOperation", 412, ec2.describe_instance_status, DryRun=True)


def test_get_console_output(ec2, service, ami, wait_state):
    instance_id = ids(launch(ec2, ami))[0]
    wait_state(instance_id, "running")
    answer = ec2.get_console_output(InstanceId=instance_id, Latest=True)
    assert answer["InstanceId"] == instance_id
    assert isinstance(answer["Timestamp"], dt.datetime)
    inst, text = service.instances.console(ec2.caller, instance_id)
    output = answer.get("Output", "")  # botocore decodes its base64
    # the host key the service made for the guest first, as EC2 shows cloud-init's blocks
    key = ssh.fingerprint(inst.ssh_host_key)
    assert output == (f"-----BEGIN SSH HOST KEY FINGERPRINTS-----\n256 {key} (ED25519)\n"
                      "-----END SSH HOST KEY FINGERPRINTS-----\n"
                      f"-----BEGIN SSH HOST KEY KEYS-----\n{inst.ssh_host_key}\n-----END SSH HOST KEY KEYS-----\n"
                      + text)
    expect("InvalidInstanceID.NotFound", 400, ec2.get_console_output, InstanceId="i-" + "0" * 17)
    expect("InvalidInstanceID.Malformed", 400, ec2.get_console_output, InstanceId="nope")
    expect("DryRunOperation", 412, ec2.get_console_output, InstanceId=instance_id, DryRun=True)


# -- state changes: dry runs and errors --------------------------------------------------------------

def test_state_changes_dry_run(ec2, service, ami, wait_state):
    instance_id = ids(launch(ec2, ami))[0]
    wait_state(instance_id, "running")
    for call in (ec2.stop_instances, ec2.start_instances, ec2.reboot_instances, ec2.terminate_instances):
        expect("DryRunOperation", 412, call, InstanceIds=[instance_id], DryRun=True)
        expect("InvalidInstanceID.NotFound", 400, call, InstanceIds=["i-" + "0" * 17], DryRun=True)
    service.worker.idle(60)
    assert service.instances.get(ec2.caller, instance_id).state == "running"


def test_state_change_errors(endpoint, ec2, ami):
    missing = "i-" + "f" * 17
    for call in (ec2.stop_instances, ec2.start_instances, ec2.reboot_instances, ec2.terminate_instances):
        expect("InvalidInstanceID.NotFound", 400, call, InstanceIds=[missing])
        expect("InvalidInstanceID.Malformed", 400, call, InstanceIds=["i-xyz"])
    base = {"Version": "2016-11-15"}
    assert "InstanceId.1" in raw_error(endpoint.raw(ec2, base | {"Action": "StopInstances"}), 400,
                                       "MissingParameter")
    assert "Force" in raw_error(endpoint.raw(ec2, base | {"Action": "StopInstances", "InstanceId.1": missing,
                                                          "Force": "maybe"}), 400, "UnknownParameter")


# -- accounts ----------------------------------------------------------------------------------

def test_another_accounts_instances_do_not_exist(endpoint, ec2, service, ami):
    mine = ids(launch(ec2, ami))[0]
    bob = endpoint.client("bob")
    theirs = ids(launch(bob, ami))[0]
    assert ids(ec2.describe_instances()) == [mine]
    assert ids(bob.describe_instances()) == [theirs]
    assert bob.describe_instances()["Reservations"][0]["OwnerId"] == bob.caller.account_id
    for call in (ec2.stop_instances, ec2.start_instances, ec2.reboot_instances, ec2.terminate_instances,
                 ec2.describe_instances, ec2.describe_instance_status):
        expect("InvalidInstanceID.NotFound", 400, call, InstanceIds=[theirs])
    expect("InvalidInstanceID.NotFound", 400, ec2.get_console_output, InstanceId=theirs)
    expect("InvalidInstanceID.NotFound", 400, ec2.describe_instance_attribute, InstanceId=theirs,
           Attribute="userData")
    assert ids(ec2.describe_instances(Filters=[{"Name": "instance-id", "Values": [theirs]}])) == []
    assert service.instances.get(bob.caller, theirs).state != "shutting-down"

    admin = endpoint.client("root", admin=True)
    owners = {r["Instances"][0]["InstanceId"]: r["OwnerId"] for r in admin.describe_instances()["Reservations"]}
    assert owners == {mine: ec2.caller.account_id, theirs: bob.caller.account_id}


def test_wrong_credentials(endpoint, ec2):
    wrong = endpoint.client("mallory", secret="not-the-secret-at-all-0000000000000000000")
    expect("AuthFailure", 401, wrong.describe_instances)
    expect("AuthFailure", 401, wrong.run_instances, ImageId="ami-" + "0" * 17, InstanceType="t3.micro",
           MinCount=1, MaxCount=1)
    assert endpoint.service.instances.count() == 0


def test_a_change_of_several_instances_is_all_or_nothing(ec2, fleet, wait_state):
    a, b, c = fleet["a"], fleet["b"], fleet["c"]  # a, b running; c stopped
    ec2.terminate_instances(InstanceIds=[c])
    wait_state(c, "terminated")
    # c cannot be stopped or started any more: neither a nor b changes
    assert c in expect("IncorrectInstanceState", 400, ec2.stop_instances, InstanceIds=[a, b, c])
    assert c in expect("IncorrectInstanceState", 400, ec2.start_instances, InstanceIds=[c, a])
    missing = "i-" + "0" * 17
    expect("InvalidInstanceID.NotFound", 400, ec2.stop_instances, InstanceIds=[a, missing])
    states = {i["InstanceId"]: i["State"]["Name"] for r in ec2.describe_instances(InstanceIds=[a, b])["Reservations"]
              for i in r["Instances"]}
    assert states == {a: "running", b: "running"}
    # all valid: every one changes, each with its own previous state
    changed = ec2.stop_instances(InstanceIds=[a, b])["StoppingInstances"]
    assert {(i["InstanceId"], i["PreviousState"]["Name"]) for i in changed} == {(a, "running"), (b, "running")}
