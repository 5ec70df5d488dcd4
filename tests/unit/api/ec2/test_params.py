"""The EC2 Query API's parameter parsing (``api.ec2.params``), without a server."""

from __future__ import annotations

import base64
import sys

import pytest

from api.ec2.errors import DryRunOperation, MalformedQueryString, UnknownParameter, wire_status
from api.ec2.pages import matches, page
from api.ec2.params import Params, parse_pairs
from computed.errors import InvalidParameterValue, MissingParameter


def P(*pairs) -> Params:
    return Params(pairs)


# -- pairs -----------------------------------------------------------------------------------

def test_parse_pairs_keeps_blank_values_and_decodes_utf8():
    assert parse_pairs(b"Action=DescribeTags&Filter.1.Value.1=&Tag.1.Value=caf%C3%A9+x") == [
        ("Action", "DescribeTags"), ("Filter.1.Value.1", ""), ("Tag.1.Value", "café x")]
    assert parse_pairs(b"") == []
    assert parse_pairs(b"Flag") == [("Flag", "")]


@pytest.mark.parametrize("data", [b"Tag.1.Value=%FF", b"\xff=1", b"a=%C3"])
def test_parse_pairs_refuses_what_is_not_utf8(data):
    with pytest.raises(MalformedQueryString):
        parse_pairs(data)


def test_a_parameter_given_twice_is_refused():
    with pytest.raises(InvalidParameterValue, match="more than once"):
        P(("InstanceId.1", "i-1"), ("InstanceId.1", "i-2"))


# -- single values -----------------------------------------------------------------------------

def test_string_required_and_missing():
    p = P(("KeyName", "k"))
    assert p.string("KeyName", required=True) == "k"
    assert p.string("Other") is None
    with pytest.raises(MissingParameter, match="ImageId"):
        p.string("ImageId", required=True)


@pytest.mark.parametrize("raw,expected", [("5", 5), ("0", 0), ("-3", -3), (" 7 ", 7), ("1000", 1000)])
def test_integer(raw, expected):
    assert P(("MaxCount", raw)).integer("MaxCount") == expected


@pytest.mark.parametrize("raw", ["", "five", "1.5", "1e3", "0x10", "9" * 30, "+-1"])
def test_integer_refuses_what_is_not_a_whole_number(raw):
    with pytest.raises(InvalidParameterValue, match="MaxCount"):
        P(("MaxCount", raw)).integer("MaxCount")


def test_integer_bounds_and_required():
    p = P(("MaxResults", "4"), ("Other", "1001"))
    with pytest.raises(InvalidParameterValue, match="between 5 and 1000"):
        p.integer("MaxResults", minimum=5, maximum=1000)
    with pytest.raises(InvalidParameterValue, match="at most 1000"):
        p.integer("Other", maximum=1000)
    with pytest.raises(MissingParameter, match="MinCount"):
        p.integer("MinCount", required=True)
    assert p.integer("Absent", minimum=5) is None


@pytest.mark.parametrize("raw,expected", [("true", True), ("false", False), ("TRUE", True), ("False", False)])
def test_boolean(raw, expected):
    assert P(("DryRun", raw)).boolean("DryRun") is expected


@pytest.mark.parametrize("raw", ["", "yes", "1", "0", "t"])
def test_boolean_refuses_other_words(raw):
    with pytest.raises(InvalidParameterValue, match="DryRun"):
        P(("DryRun", raw)).boolean("DryRun")


def test_boolean_default():
    assert P().boolean("DryRun") is False
    assert P().boolean("DryRun", default=True) is True


def test_base64():
    data = b"#!/bin/sh\necho \xff\n"
    assert P(("UserData", base64.b64encode(data).decode())).base64("UserData") == data
    assert P(("UserData", "")).base64("UserData") == b""
    assert P().base64("UserData") is None
    for bad in ("not base64!", "aGk", "aGk=x", "a===="):
        with pytest.raises(InvalidParameterValue, match="base64"):
            P(("UserData", bad)).base64("UserData")


def test_choice():
    assert P(("KeyType", "ed25519")).choice("KeyType", {"ed25519"}) == "ed25519"
    assert P().choice("KeyType", {"ed25519"}, "ed25519") == "ed25519"
    with pytest.raises(InvalidParameterValue, match="ed25519"):
        P(("KeyType", "rsa")).choice("KeyType", {"ed25519"})


# -- lists -------------------------------------------------------------------------------------

def test_strings_in_index_order_without_duplicates():
    p = P(("InstanceId.10", "c"), ("InstanceId.2", "b"), ("InstanceId.1", "a"), ("InstanceId.3", "a"))
    assert p.strings("InstanceId") == ["a", "b", "c"]
    p.check_unknown()


def test_strings_required():
    assert P().strings("InstanceId") == []
    with pytest.raises(MissingParameter, match="InstanceId.1"):
        P().strings("InstanceId", required=True)


@pytest.mark.parametrize("name", ["InstanceId.0", "InstanceId.01", "InstanceId.x", "InstanceId", "InstanceId.1.2",
                                  "instanceid.1"])
def test_badly_indexed_names_are_unknown(name):
    p = P((name, "i-1"))
    assert p.strings("InstanceId") == []
    with pytest.raises(UnknownParameter, match=name.replace(".", r"\.")):
        p.check_unknown()


def test_filters():
    p = P(("Filter.1.Name", "instance-state-name"), ("Filter.1.Value.1", "running"),
          ("Filter.1.Value.2", "stopped"), ("Filter.2.Name", "tag:Name"), ("Filter.2.Value.1", ""),
          ("Filter.3.Name", "instance-state-name"), ("Filter.3.Value.1", "pending"),
          ("Filter.3.Value.2", "running"))
    assert p.filters({"instance-state-name"}, prefixes=("tag:",)) == {
        "instance-state-name": ("running", "stopped", "pending"), "tag:Name": ("",)}
    p.check_unknown()


def test_filter_errors():
    with pytest.raises(InvalidParameterValue, match="'colour' is invalid"):
        P(("Filter.1.Name", "colour"), ("Filter.1.Value.1", "red")).filters({"instance-id"})
    with pytest.raises(InvalidParameterValue, match="'tag:' is invalid"):  # a prefix alone is no name
        P(("Filter.1.Name", "tag:"), ("Filter.1.Value.1", "x")).filters(set(), prefixes=("tag:",))
    with pytest.raises(MissingParameter, match=r"Filter\.1\.Name"):
        P(("Filter.1.Value.1", "x")).filters({"instance-id"})
    with pytest.raises(InvalidParameterValue, match="at least one value"):
        P(("Filter.1.Name", "instance-id")).filters({"instance-id"})
    p = P(("Filter.1.Name", "instance-id"), ("Filter.1.Value.1", "i-1"), ("Filter.1.Values.1", "i-2"))
    p.filters({"instance-id"})
    with pytest.raises(UnknownParameter, match="Filter.1.Values.1"):
        p.check_unknown()


def test_tags():
    p = P(("Tag.1.Key", "Name"), ("Tag.1.Value", "web"), ("Tag.2.Key", "empty"), ("Tag.3.Key", "blank"),
          ("Tag.3.Value", ""))
    assert p.tags() == {"Name": "web", "empty": "", "blank": ""}
    p = P(("Tag.1.Key", "Name"), ("Tag.2.Key", "env"), ("Tag.2.Value", ""))
    assert p.tags(value_required=False) == {"Name": None, "env": ""}


def test_tag_errors():
    with pytest.raises(MissingParameter, match=r"Tag\.1\.Key"):
        P(("Tag.1.Value", "x")).tags()
    with pytest.raises(InvalidParameterValue, match="more than once"):
        P(("Tag.1.Key", "a"), ("Tag.2.Key", "a")).tags()


def test_tag_specifications():
    p = P(("TagSpecification.1.ResourceType", "instance"), ("TagSpecification.1.Tag.1.Key", "Name"),
          ("TagSpecification.1.Tag.1.Value", "web"), ("TagSpecification.1.Tag.2.Key", "team"))
    assert p.tag_specifications({"instance"}) == {"instance": {"Name": "web", "team": ""}}
    p.check_unknown()
    with pytest.raises(InvalidParameterValue, match="volume"):
        P(("TagSpecification.1.ResourceType", "volume"), ("TagSpecification.1.Tag.1.Key", "a")
          ).tag_specifications({"instance"})
    with pytest.raises(MissingParameter, match="ResourceType"):
        P(("TagSpecification.1.Tag.1.Key", "a"),).tag_specifications({"instance"})
    with pytest.raises(InvalidParameterValue, match="more than one"):
        P(("TagSpecification.1.ResourceType", "instance"), ("TagSpecification.2.ResourceType", "instance")
          ).tag_specifications({"instance"})


# -- the end of parsing ------------------------------------------------------------------------

def _traced_lines(work) -> int:
    """How many lines of Python WORK runs: a count of work done, not of time."""
    count = 0

    def trace(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return trace

    sys.settrace(trace)
    try:
        work()
    finally:
        sys.settrace(None)
    return count


def _many_lists(n: int):
    pairs = [("Action", "DescribeInstances")]
    for i in range(1, n + 1):
        # every filter has the same name: their values are merged
        pairs += [(f"Filter.{i}.Name", "tag:k"), (f"Filter.{i}.Value.1", f"v{i}"),
                  (f"TagSpecification.{i}.ResourceType", f"t{i}"), (f"TagSpecification.{i}.Tag.1.Key", "k"),
                  (f"InstanceId.{i}", f"i-{i}")]
    return pairs


def test_lists_are_read_in_time_linear_in_the_parameters():
    """Reading N filters, N tag specifications and N ids costs O(N), not O(N^2) (each list
    used to rescan every parameter name): four times the parameters, about four times the
    lines run, where a rescan per list would be sixteen."""
    def read(n):
        def work():
            p = Params(_many_lists(n))
            assert len(p.filters(allowed=(), prefixes=("tag:",))["tag:k"]) == n
            p.tag_specifications({f"t{i}" for i in range(1, n + 1)})
            p.strings("InstanceId")
        return work

    small, large = _traced_lines(read(200)), _traced_lines(read(800))
    assert large / small < 5, (small, large)


def test_unknown_parameters_and_the_envelope():
    p = P(("Action", "DescribeInstances"), ("Version", "2016-11-15"), ("X-Amz-Signature", "ab"),
          ("X-Amz-Credential", "x"), ("InstanceId.1", "i-1"), ("Bogus", "1"))
    p.strings("InstanceId")
    with pytest.raises(UnknownParameter, match="The parameter Bogus is not recognized"):
        p.finish()
    assert not p.finished


def test_finish_ends_a_dry_run():
    p = P(("KeyName", "k"))
    p.string("KeyName")
    p.finish()
    assert p.finished
    p = P(("KeyName", "k"))
    p.dry_run = True
    p.string("KeyName")
    with pytest.raises(DryRunOperation) as e:
        p.finish()
    assert e.value.message == "Request would have succeeded, but DryRun flag is set."


# -- statuses, paging and wildcards --------------------------------------------------------------

@pytest.mark.parametrize("rest,ec2", [(400, 400), (404, 400), (409, 400), (422, 400), (401, 401), (403, 403),
                                      (412, 412), (413, 413), (429, 503), (500, 500), (503, 503)])
def test_wire_status(rest, ec2):
    assert wire_status(rest) == ec2


def test_page():
    items = list(range(12))
    first, token = page(items, 5, None)
    second, token2 = page(items, 5, token)
    third, token3 = page(items, 5, token2)
    assert (first, second, third, token3) == ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11], None)
    assert page(items, None, None) == (items, None)
    assert page(items, 12, None) == (items, None)
    for bad in ("garbage", "eyJvIjogLTF9", "eyJvIjogdHJ1ZX0", "e30", "!!"):
        with pytest.raises(InvalidParameterValue, match="NextToken"):
            page(items, 5, bad)


def test_matches():
    assert matches("t3.micro", None)
    assert matches("t3.micro", ("t3.*",))
    assert matches("t3.micro", ("m5.large", "t3.micr?"))
    assert not matches("t3.micro", ("t3.small",))
    assert not matches("T3.micro", ("t3.*",))  # EC2's filters are case-sensitive
    assert matches(2, ("2",)) and matches(True, ("true",))
