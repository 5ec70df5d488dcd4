"""Helpers for the boto3 tests of the EC2 Query API."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from botocore.exceptions import ClientError


def expect(code: str, status: int, call, *args, **kwargs) -> str:
    """CALL(*ARGS, **KWARGS) fails with the EC2 error CODE and HTTP STATUS; its message."""
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    response = info.value.response
    assert response["Error"]["Code"] == code, response["Error"]
    assert response["ResponseMetadata"]["HTTPStatusCode"] == status, response
    assert response["Error"]["Message"]
    assert response["ResponseMetadata"]["RequestId"]
    return response["Error"]["Message"]


def raw_error(answer: tuple[int, bytes], status: int, code: str) -> str:
    """An (HTTP status, body) answer is EC2's error CODE with STATUS; its message."""
    got, body = answer
    assert got == status, body
    root = ET.fromstring(body)
    assert root.tag == "Response", body
    assert root.find("Errors/Error/Code").text == code, body
    return root.find("Errors/Error/Message").text


def instances(reservations: list[dict]) -> list[dict]:
    return [i for r in reservations for i in r["Instances"]]


def ids(response: dict) -> list[str]:
    """Instance ids of a DescribeInstances or RunInstances answer."""
    if "Reservations" in response:
        return [i["InstanceId"] for i in instances(response["Reservations"])]
    return [i["InstanceId"] for i in response["Instances"]]


def tags(instance: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
