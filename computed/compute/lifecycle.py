"""An instance's life after the API answered: the background steps of launch, stop, start,
reboot and terminate, and the readiness checks (SSH, then the container engine). Every
state change is written in one transaction with the facts it depends on."""

from __future__ import annotations

import logging
import time

import paramiko

from computed.store.engine import Database
from computed.clock import Clock
from computed.metrics.counters import Metrics
from computed.store.models import Instance
from computed.store.processes import Processes
from computed.virt.errors import LaunchError
from computed.virt.provisioner import Provisioner, Undo
from computed.settings import Settings
from .state import (BOOT_FAILURE, INTERNAL_ERROR, USER_STOP, USER_TERMINATE, Failure, Reason, State, failure,
                    set_reason, set_state)
from .worker import Worker

log = logging.getLogger(__name__)

class Lifecycle:
    def __init__(self, settings: Settings, db: Database, provisioner: Provisioner, worker: Worker, clock: Clock,
                 processes: Processes, metrics: Metrics | None = None):
        self.processes = processes
        self.metrics = metrics or Metrics()
        self.faults = provisioner.faults
        self.clock = clock
        self.settings = settings
        self.db = db
        self.provisioner = provisioner
        self.worker = worker

    def _load(self, instance_id: str) -> Instance | None:
        with self.db.session() as s:
            return s.get(Instance, instance_id)

    def _move(self, instance_id: str, expected: State, state: State, reason: Reason | Failure | None = None) -> bool:
        """EXPECTED -> STATE, unless the instance has moved on meanwhile (e.g. terminated)."""
        with self.db.session() as s:
            inst = s.get(Instance, instance_id)
            if inst is None or inst.state != expected:
                return False
            set_state(inst, state, reason, self.clock.now())
            return True

    def _state(self, instance_id: str) -> str | None:
        inst = self._load(instance_id)
        return inst.state if inst else None

    # -- what the API asks for -----------------------------------------------------------

    def launch(self, instance_id: str) -> None:
        self.worker.submit(instance_id, lambda: self._launch(instance_id), f"launch {instance_id}")

    def stop(self, instance_id: str) -> None:
        self.worker.submit(instance_id, lambda: self._stop(instance_id), f"stop {instance_id}")

    def start(self, instance_id: str) -> None:
        self.worker.submit(instance_id, lambda: self._start(instance_id), f"start {instance_id}")

    def reboot(self, instance_id: str) -> None:
        self.worker.submit(instance_id, lambda: self._reboot(instance_id), f"reboot {instance_id}")

    def terminate(self, instance_id: str, reason: Reason = USER_TERMINATE) -> None:
        self.worker.submit(instance_id, lambda: self._terminate(instance_id, reason), f"terminate {instance_id}")

    def readiness(self, instance_id: str) -> None:
        self.worker.submit(instance_id, lambda: self._readiness(instance_id, first_boot=False),
                           f"readiness of {instance_id}")

    def mine(self, inst: Instance) -> bool:
        """Whether this process handles INST: it made the last change, or whoever did is gone."""
        owner = inst.handled_by
        return owner is None or owner == self.processes.id or owner not in self.processes.alive()

    def guest_stopped(self, instance_id: str, reason: Reason) -> None:
        """libvirt says the guest stopped by itself (powered off, crashed): a running
        instance becomes stopped now, and its billing stops now. Work in flight owns its
        instance (a first boot that powers off is a failed launch), so it is left alone;
        so is another live process's instance (every process hears the host's events)."""
        if self.worker.busy(instance_id):
            return
        try:
            self.worker.submit(instance_id, lambda: self._guest_stopped(instance_id, reason),
                               f"{instance_id} stopped by itself")
        except RuntimeError:  # the service is shutting down; the next start reconciles it
            pass

    # -- the work ----------------------------------------------------------------------

    def _launch(self, instance_id: str) -> None:
        with self.worker.lock(instance_id):
            inst = self._load(instance_id)
            if inst is None or inst.state != State.PENDING:
                return
            self.metrics.launch_started(inst.size, inst.image)
            self.faults.point("launch.committed")
            undo = Undo()
            try:
                self.provisioner.create(inst, undo)
            except Exception as e:
                undo.run()
                code = e.code if isinstance(e, LaunchError) else INTERNAL_ERROR
                self.metrics.launch_failed(code)
                # the error's words are the host's (paths, URIs, libvirt's): admins only see them
                self._end(instance_id, failure(instance_id, "the launch failed", e, code))
                return
            if self._move(instance_id, State.PENDING, State.RUNNING):
                self.metrics.launch_running(self._since_launch(inst))
        self._readiness(instance_id, first_boot=True)

    def _start(self, instance_id: str) -> None:
        with self.worker.lock(instance_id):
            inst = self._load(instance_id)
            if inst is None or inst.state != State.PENDING:
                return
            self.faults.point("start.committed")
            try:
                self.provisioner.start(inst)
                self.faults.point("start.started")
            except Exception as e:
                self._move(instance_id, State.PENDING, State.STOPPED, failure(instance_id, "the start failed", e))
                return
            self._move(instance_id, State.PENDING, State.RUNNING)
        self._readiness(instance_id, first_boot=False)

    def _stop(self, instance_id: str) -> None:
        with self.worker.lock(instance_id):
            inst = self._load(instance_id)
            if inst is None or inst.state != State.STOPPING:
                return
            self.faults.point("stop.committed")
            self.provisioner.stop(inst)
            self.faults.point("stop.off")
            # the reason it was stopped for stays (the user's, or e.g. its budget's)
            reason = Reason(inst.state_reason_code, inst.state_reason_message) if inst.state_reason_code else USER_STOP
            if inst.state_reason_detail:
                reason = Failure(reason, inst.state_reason_detail)
            self._move(instance_id, State.STOPPING, State.STOPPED, reason)

    def _reboot(self, instance_id: str) -> None:
        with self.worker.lock(instance_id):
            inst = self._load(instance_id)
            if inst is None or inst.state != State.RUNNING:
                return
            # ready again means logged in to the new boot: the old one's sshd answers until it goes down
            boots = self.provisioner.capabilities(inst).boots_guests
            old_boot = self.provisioner.boot_id(inst) if boots else None
            self.provisioner.reboot(inst)
            if old_boot is None and boots:
                time.sleep(2)  # no boot id to tell the boots apart: give the old one a moment to go
        self._readiness(instance_id, first_boot=False, not_boot=old_boot)

    def _terminate(self, instance_id: str, reason: Reason) -> None:
        with self.worker.lock(instance_id):
            inst = self._load(instance_id)
            if inst is None or inst.state == State.TERMINATED:
                return
            self.faults.point("terminate.committed")
            try:
                self.provisioner.delete(inst)
            except Exception as e:
                # stays shutting-down: terminating it again retries
                with self.db.session() as s:
                    inst = s.get(Instance, instance_id)
                    set_reason(inst, failure(instance_id, "the termination failed, retry it", e))
                return
            self._end(instance_id, reason)

    def _guest_stopped(self, instance_id: str, reason: Reason) -> None:
        with self.worker.lock(instance_id):
            inst = self._load(instance_id)
            if inst is None or inst.state != State.RUNNING or not self.mine(inst) or not self.provisioner.is_off(inst):
                return
            log.info("%s stopped by itself: %s", instance_id, reason[1])
            self._move(instance_id, State.RUNNING, State.STOPPED, reason)

    def _end(self, instance_id: str, reason: Reason | Failure) -> None:
        with self.db.session() as s:
            inst = s.get(Instance, instance_id)
            if inst is not None and inst.state != State.TERMINATED:
                set_state(inst, State.TERMINATED, reason, self.clock.now())

    def _since_launch(self, inst: Instance) -> float:
        return (self.clock.now() - inst.launch_time).total_seconds()

    def _readiness(self, instance_id: str, first_boot: bool, not_boot: str | None = None) -> None:
        """ready_ssh once the service logs in with its own key (to another boot than
        NOT_BOOT, if given), ready_engine once the container engine ran the preloaded image.
        A first boot that never answers SSH is a failed launch: the instance is terminated
        with the reason."""
        inst = self._load(instance_id)
        if inst is None or not self.provisioner.capabilities(inst).boots_guests:
            return  # no guest runs that could answer (libvirt's test driver)
        deadline = time.monotonic() + self.settings.boot_timeout
        client = self.provisioner.wait_for_ssh(inst, deadline, lambda: self._state(instance_id) == State.RUNNING,
                                               not_boot)
        if client is None:
            if first_boot and self._state(instance_id) == State.RUNNING:
                off = self.provisioner.is_off(inst)
                why = ("the guest powered off during its first boot" if off
                       else f"no SSH login within {self.settings.boot_timeout} s of the first boot")
                self._move(instance_id, State.RUNNING, State.SHUTTING_DOWN, Reason(BOOT_FAILURE, why))
                self.metrics.launch_failed(BOOT_FAILURE)
                self._terminate(instance_id, Reason(BOOT_FAILURE, f"launch failed: {why}"))
            return
        try:
            with self.db.session() as s:
                inst = s.get(Instance, instance_id)
                if inst.state != State.RUNNING:
                    return
                inst.ready_ssh = True
            if first_boot:
                self.metrics.launch_ssh_ready(self._since_launch(inst))
            try:
                ok, detail = self.provisioner.check_engine(inst, client)
            except (OSError, EOFError, paramiko.SSHException) as e:
                ok, detail = False, f"the SSH session broke: {e!r}"
            if not ok and self._state(instance_id) == State.RUNNING:
                log.warning("container engine check on %s failed: %s", instance_id, detail)
            with self.db.session() as s:
                inst = s.get(Instance, instance_id)
                if inst.state == State.RUNNING:
                    inst.ready_engine = ok
        finally:
            client.close()
