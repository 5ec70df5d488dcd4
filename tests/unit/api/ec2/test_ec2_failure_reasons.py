"""Issue 17, finding 9, through EC2's DescribeInstances: a failed launch's StateReason and
reason show a tenant a generic message with an error id, an admin the detail too."""

from __future__ import annotations

import re

from computed.virt.errors import LaunchError

SECRET_PATH = "/var/lib/computed/instances/i-0/disk.qcow2"


def test_describe_instances_hides_a_failures_words_from_tenants(serve, monkeypatch):
    endpoint = serve()
    svc = endpoint.service
    alice, boss = endpoint.client("alice"), endpoint.client("boss", admin=True)

    def fail(inst, undo):
        raise LaunchError(f"creating the instance's disk failed: qemu-img: {SECRET_PATH}: Permission denied")
    monkeypatch.setattr(svc.provisioner, "create", fail)
    ami = alice.describe_images()["Images"][0]["ImageId"]
    instance_id = alice.run_instances(ImageId=ami, InstanceType="t3.nano", MinCount=1, MaxCount=1)[
        "Instances"][0]["InstanceId"]
    svc.worker.idle(60)

    [theirs] = alice.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"]
    assert theirs["State"]["Name"] == "terminated"
    assert theirs["StateReason"]["Code"] == "Server.InternalError"
    assert re.fullmatch(r"the launch failed \(error id e-[0-9a-f]{8}\)", theirs["StateReason"]["Message"])
    assert SECRET_PATH not in theirs["StateTransitionReason"] and SECRET_PATH not in str(theirs)

    [seen] = boss.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"]
    assert seen["StateReason"]["Message"].startswith(theirs["StateReason"]["Message"] + ": ")
    assert SECRET_PATH in seen["StateReason"]["Message"] and SECRET_PATH in seen["StateTransitionReason"]
