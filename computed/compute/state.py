"""The instance state machine: EC2's state names and codes, every change of state the
service makes (the user's actions and its own background steps) in one table, the state
reasons, and ``set_state``, the one place a state changes.

pending(0) -> running(16) -> stopping(64) -> stopped(80) -> pending -> running ...
any -> shutting-down(32) -> terminated(48). An action asked for through the API changes the
state at once and its step finishes it in the background (``lifecycle``); the service's own
moves come from those steps, from the host's events and from ``reconcile``.

States are ``StrEnum`` members, so they are the very strings the store holds and both wire
formats send; a state read back from the store is a plain ``str`` and compares equal to its
member."""

from __future__ import annotations

import datetime as dt
import enum
import logging
import secrets
from collections.abc import Mapping
from typing import NamedTuple

from sqlalchemy.orm import object_session

from computed.store.models import Instance, UsageEvent


class State(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SHUTTING_DOWN = "shutting-down"
    TERMINATED = "terminated"
    STOPPING = "stopping"
    STOPPED = "stopped"

    @property
    def code(self) -> int:
        """EC2's number for the state (its high byte is reserved; always 0 here)."""
        return CODES[self]


#: EC2's state codes, in their order (the order states are listed in, e.g. by the metrics)
CODES: dict[State, int] = {State.PENDING: 0, State.RUNNING: 16, State.SHUTTING_DOWN: 32, State.TERMINATED: 48,
                           State.STOPPING: 64, State.STOPPED: 80}
#: the names as plain strings, for validators and choices that would treat an enum by its names
NAMES = tuple(s.value for s in State)
#: every state but terminated: the instance has (or is getting, or is giving up) a domain
LIVE = tuple(s for s in State if s is not State.TERMINATED)
#: states in which the forwarded ports may change (not while a lifecycle step is under way)
CHANGEABLE = (State.RUNNING, State.STOPPED)


log = logging.getLogger(__name__)


class Reason(NamedTuple):
    """Why an instance is in its state, as EC2's StateReason (code, message)."""
    code: str
    message: str


class Failure(NamedTuple):
    """A step that failed with an error whose words are the host's (libvirt's, qemu-img's,
    with paths and URIs): the REASON every caller sees (a generic message with an error id)
    and the DETAIL admins see, also logged with the id so that an admin can find it."""
    reason: Reason
    detail: str


def failure(instance_id: str, what: str, error: BaseException | str, code: str | None = None) -> Failure:
    """WHAT (e.g. "the launch failed") as a Failure of ERROR: its message says WHAT and a new
    error id, its detail ERROR's text; logged at once with the id."""
    error_id = f"e-{secrets.token_hex(4)}"
    detail = str(error) or type(error).__name__
    log.warning("%s: %s (error id %s): %s", instance_id, what, error_id, detail)
    return Failure(Reason(code or INTERNAL_ERROR, f"{what} (error id {error_id})"), detail)


INTERNAL_ERROR = "Server.InternalError"
#: a first boot that never answered SSH (a failed launch)
BOOT_FAILURE = "Server.BootFailure"

USER_STOP = Reason("Client.UserInitiatedShutdown", "User initiated shutdown")
USER_TERMINATE = Reason("Client.UserInitiatedShutdown", "User initiated shutdown")
SELF_SHUTDOWN = Reason("Client.InstanceInitiatedShutdown", "Instance initiated shutdown")
CRASHED = Reason(INTERNAL_ERROR, "the guest crashed")
VANISHED = Reason(INTERNAL_ERROR, "the instance's domain disappeared from its host")
DESTROYED_OUTSIDE = Reason(INTERNAL_ERROR, "the domain was destroyed outside the service")


class Action(NamedTuple):
    """One kind of state change. MOVES maps each state it may be made from to the state it
    leads to, or to None where there is nothing to do (stopping a stopped instance is no
    error). The user's actions also have a VERB (the error says the instance "cannot be
    {verb}"), the ``Lifecycle`` STEP that carries them out, and the REASON they set."""
    name: str
    verb: str | None
    step: str | None
    moves: Mapping[State, State | None]
    reason: Reason | None = None


#: every change of state there is, by name
ACTIONS: dict[str, Action] = {a.name: a for a in (
    # asked for through the API (``Instances.change``)
    Action("stop", "stopped", "stop",
           {State.RUNNING: State.STOPPING, State.STOPPING: None, State.STOPPED: None}, USER_STOP),
    Action("start", "started", "start", {State.STOPPED: State.PENDING, State.PENDING: None, State.RUNNING: None}),
    Action("terminate", "terminated", "terminate",
           {s: State.SHUTTING_DOWN for s in (State.PENDING, State.RUNNING, State.STOPPING, State.STOPPED)}
           | {State.SHUTTING_DOWN: None, State.TERMINATED: None}, USER_TERMINATE),
    # the service's own: a launch or start came up (or reconcile found a launch done)
    Action("booted", None, None, {State.PENDING: State.RUNNING}),
    # a start that failed goes back to stopped
    Action("start-failed", None, None, {State.PENDING: State.STOPPED}),
    Action("stop-done", None, None, {State.STOPPING: State.STOPPED}),
    # the guest powered off or crashed by itself
    Action("powered-off", None, None, {State.RUNNING: State.STOPPED}),
    # a first boot that never answered SSH is terminated
    Action("boot-failed", None, None, {State.RUNNING: State.SHUTTING_DOWN}),
    # a terminate finished, a launch failed, or reconcile found the domain gone
    Action("ended", None, None, {s: State.TERMINATED for s in LIVE}),
)}

def may(current: str, new: str) -> bool:
    """Whether some action moves an instance from CURRENT to NEW."""
    return any(a.moves.get(current) == new for a in ACTIONS.values())


def set_state(inst: Instance, state: str, reason: tuple[str, str] | Failure | None, now: dt.datetime) -> None:
    """The one place an instance's state changes; its usage event goes into the same
    transaction (INST must belong to a session). A Failure's detail is kept beside its
    reason (``state_reason_detail``); any other reason clears it."""
    inst.state = state
    inst.state_changed_at = now
    set_reason(inst, reason)
    if state != State.RUNNING:
        inst.ready_ssh = inst.ready_engine = False
    if state == State.TERMINATED:
        inst.terminated_at = inst.state_changed_at
        inst.ssh_port = None  # the port goes back to the pool
        inst.ports.clear()  # and so do its forwarded ports
    object_session(inst).add(UsageEvent.of(inst))


def set_reason(inst: Instance, reason: tuple[str, str] | Failure | None) -> None:
    """INST's state reason (and, of a Failure, its detail), its state unchanged."""
    detail = None
    if isinstance(reason, Failure):
        reason, detail = reason
    inst.state_reason_code, inst.state_reason_message = reason or (None, None)
    inst.state_reason_detail = detail
