"""The provisioner (``computed.virt.provisioner``): ``Undo`` runs a failed launch's steps back
last first and goes on past a step that fails; ``forwards`` gives an instance's forwarded
ports in the order of their host ports; on libvirt's test driver, ``create`` makes an
instance's files (a qcow2 overlay on the image's disk, its seed, its console log) and its
running domain, registering an undo for each, and ``delete`` removes all of them."""

from __future__ import annotations

import json
import logging
import subprocess

import pytest

from computed.store.models import Instance, PortForward
from computed.virt.provisioner import Undo, forwards


def test_undo_runs_last_first_once():
    undo, ran = Undo(), []
    for step in ("directory", "disk", "domain"):
        undo.push(step, lambda step=step: ran.append(step))
    undo.run()
    assert ran == ["domain", "disk", "directory"]
    undo.run()  # the steps are gone once run
    assert ran == ["domain", "disk", "directory"]


def test_undo_goes_on_past_a_failing_step(caplog):
    undo, ran = Undo(), []

    def fail():
        raise OSError("the disk is gone")

    undo.push("directory", lambda: ran.append("directory"))
    undo.push("disk", fail)
    undo.push("domain", lambda: ran.append("domain"))
    with caplog.at_level(logging.ERROR, logger="computed.virt.provisioner"):
        undo.run()
    assert ran == ["domain", "directory"]
    [record] = [r for r in caplog.records if r.name == "computed.virt.provisioner"]
    assert record.getMessage() == "undoing disk failed"
    assert isinstance(record.exc_info[1], OSError)


def test_forwards_in_host_port_order():
    inst = Instance(id="i-0123456789abcdef0", ports=[
        PortForward(host_address="127.0.0.1", host_port=40010, guest_port=80),
        PortForward(host_address="127.0.0.2", host_port=40002, guest_port=5432),
        PortForward(host_address="127.0.0.1", host_port=40005, guest_port=443)])
    assert forwards(inst) == (("127.0.0.2", 40002, 5432), ("127.0.0.1", 40005, 443), ("127.0.0.1", 40010, 80))
    assert forwards(Instance(id="i-0123456789abcdef1", ports=[])) == ()


@pytest.fixture
def instance(service, launch, wait):
    """A running instance's row, this process's lock on it held (so that the service's own
    work, e.g. on the lifecycle event of a domain the test removes, waits until the test ends)."""
    iid = launch()["instances"][0]["id"]
    wait()
    with service.worker.lock(iid):
        with service.db.session() as s:
            inst = s.get(Instance, iid)
        yield inst
    wait()


def made(service, inst) -> dict:
    """What of INST is on its host: its domain's state and which of its files exist."""
    files = service.provisioner.files(inst.id)
    return {"domain": service.default_driver.state(inst.domain_name), "directory": files.root.is_dir(),
            "disk": files.disk.is_file(), "seed": files.seed.is_file(), "console": files.console.is_file()}


def test_create_then_delete_and_create_then_undo(service, instance):
    provisioner = service.provisioner
    everything = {"domain": "running", "directory": True, "disk": True, "seed": True, "console": True}
    nothing = {"domain": None, "directory": False, "disk": False, "seed": False, "console": False}
    assert made(service, instance) == everything  # the launch's create

    provisioner.delete(instance)
    assert made(service, instance) == nothing

    undo = Undo()
    provisioner.create(instance, undo)
    assert made(service, instance) == everything
    files = provisioner.files(instance.id)
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(files.disk)], check=True,
                                     capture_output=True, text=True).stdout)
    assert info["format"] == "qcow2"
    assert info["backing-filename"] == str(provisioner.image_of(instance).artifact_path("disk"))
    assert files.seed.stat().st_size > 0

    undo.run()  # what a launch that failed after the last step would do
    assert made(service, instance) == nothing
