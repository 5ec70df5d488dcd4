"""RunInstances against an account's limits and the host's room through boto3: EC2's
InstanceLimitExceeded (400) and InsufficientInstanceCapacity (503), and MaxCount cut down
to what they allow, at least MinCount."""

from __future__ import annotations

from .helpers import expect, ids


def launch(ec2, ami, **kwargs) -> dict:
    kwargs.setdefault("InstanceType", "t3.nano")
    kwargs.setdefault("MinCount", 1)
    kwargs.setdefault("MaxCount", kwargs["MinCount"])
    return ec2.run_instances(ImageId=ami, **kwargs)


def test_an_account_limit(serve):
    endpoint = serve(account_max_instances=3)
    ec2, bob = endpoint.client("alice"), endpoint.client("bob")
    ami = ec2.describe_images()["Images"][0]["ImageId"]
    run = launch(ec2, ami, MinCount=2, MaxCount=5, ClientToken="as-many-as-allowed")
    assert len(ids(run)) == 3
    assert ids(launch(ec2, ami, MinCount=2, MaxCount=5, ClientToken="as-many-as-allowed")) == ids(run)
    message = expect("InstanceLimitExceeded", 400, launch, ec2, ami)
    assert "limit is 3 instances" in message and "3 in use" in message and "1 requested" in message
    assert len(ids(launch(bob, ami, MinCount=1, MaxCount=2))) == 2  # bob's own limit
    expect("InstanceLimitExceeded", 400, launch, bob, ami, MinCount=2, MaxCount=4)
    assert endpoint.service.instances.count() == 5


def test_a_vcpu_limit(serve):
    endpoint = serve(account_max_vcpus=5)
    ec2 = endpoint.client()
    ami = ec2.describe_images()["Images"][0]["ImageId"]
    assert len(ids(launch(ec2, ami, MinCount=1, MaxCount=4))) == 2  # t3.nano: 2 vCPUs
    message = expect("InstanceLimitExceeded", 400, launch, ec2, ami)
    assert "limit is 5 vCPUs" in message and "4 in use" in message


def test_the_hosts_room(serve):
    endpoint = serve(cpu_overcommit=0.5)  # the test driver's 16 CPUs: 8 vCPUs, four t3 instances
    ec2, bob = endpoint.client("alice"), endpoint.client("bob")
    ami = ec2.describe_images()["Images"][0]["ImageId"]
    assert len(ids(launch(ec2, ami, MinCount=1, MaxCount=3))) == 3
    assert len(ids(launch(bob, ami, MinCount=1, MaxCount=3))) == 1
    message = expect("InsufficientInstanceCapacity", 503, launch, bob, ami)
    assert "room for 8 vCPUs" in message
    assert endpoint.service.instances.count() == 4
