"""The instance state machine on its own (computed/compute/state.py): EC2's names and codes,
the one table of actions and transitions, and the reasons as EC2's (code, message) pairs."""

from __future__ import annotations

import json

import pytest

from computed.compute.state import (ACTIONS, CHANGEABLE, CODES, LIVE, NAMES, USER_STOP, USER_TERMINATE, Reason, State,
                                    may)

EC2 = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}


def test_the_states_are_ec2s_names_and_codes():
    assert {s.value: s.code for s in State} == EC2
    assert set(CODES) == set(State) and NAMES == tuple(EC2)
    assert all(type(name) is str for name in NAMES)  # plain strings for validators and click choices


def test_a_state_is_the_string_the_store_holds_and_the_wire_sends():
    assert State.SHUTTING_DOWN == "shutting-down" and State("stopped") is State.STOPPED
    assert json.dumps({"state": State.RUNNING}) == '{"state": "running"}'
    assert f"{State.TERMINATED}" == "terminated"
    with pytest.raises(ValueError):
        State("Running")


def test_live_and_changeable_states():
    assert set(LIVE) == set(State) - {State.TERMINATED}
    assert CHANGEABLE == (State.RUNNING, State.STOPPED)


@pytest.mark.parametrize("action, current, new", [
    ("stop", "running", "stopping"), ("stop", "stopping", None), ("stop", "stopped", None),
    ("start", "stopped", "pending"), ("start", "pending", None), ("start", "running", None),
    ("terminate", "pending", "shutting-down"), ("terminate", "running", "shutting-down"),
    ("terminate", "stopping", "shutting-down"), ("terminate", "stopped", "shutting-down"),
    ("terminate", "shutting-down", None), ("terminate", "terminated", None),
])
def test_the_users_actions(action, current, new):
    assert ACTIONS[action].moves[current] == new


@pytest.mark.parametrize("action, current", [("stop", "pending"), ("stop", "terminated"), ("start", "stopping"),
                                             ("start", "terminated"), ("stop", "shutting-down")])
def test_an_action_a_state_does_not_allow_is_not_in_the_table(action, current):
    assert current not in ACTIONS[action].moves


def test_the_users_actions_say_why_and_what_carries_them_out():
    assert (ACTIONS["stop"].reason, ACTIONS["terminate"].reason, ACTIONS["start"].reason) == \
        (USER_STOP, USER_TERMINATE, None)
    assert {a.name: (a.verb, a.step) for a in ACTIONS.values() if a.step} == {
        "stop": ("stopped", "stop"), "start": ("started", "start"), "terminate": ("terminated", "terminate")}


@pytest.mark.parametrize("current, new", [
    ("pending", "running"), ("running", "stopping"), ("stopping", "stopped"), ("stopped", "pending"),
    ("pending", "stopped"), ("running", "stopped"), ("running", "shutting-down"), ("shutting-down", "terminated"),
    ("stopped", "terminated"), ("pending", "terminated"),
])
def test_the_machines_moves(current, new):
    assert may(current, new)


@pytest.mark.parametrize("current, new", [
    ("stopped", "running"), ("stopping", "running"), ("shutting-down", "running"), ("terminated", "pending"),
    ("terminated", "running"), ("running", "pending"),
])
def test_moves_the_machine_does_not_make(current, new):
    assert not may(current, new)


def test_no_state_leaves_terminated():
    assert not any(may(State.TERMINATED, s) for s in State)


def test_a_reason_is_ec2s_code_and_message_pair():
    code, message = USER_STOP
    assert (code, message) == ("Client.UserInitiatedShutdown", "User initiated shutdown")
    assert Reason("Server.InternalError", "x") == ("Server.InternalError", "x")
