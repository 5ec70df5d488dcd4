"""Issue 17, finding 6: the console log is capped by virtlogd; serve checks that the local
virtlogd and qemu.conf give a cap within console_log_max_bytes, and the console API reads
the tail across virtlogd's rotation."""

from __future__ import annotations

from computed.virt import console_log

MIB = 1024 * 1024


def test_tail_reads_on_into_the_rotated_file(tmp_path):
    log = tmp_path / "console.log"
    assert console_log.tail(log, 100) == ""  # nothing written yet
    log.write_bytes(b"first boot\n")
    assert console_log.tail(log, 5) == "boot\n"
    log.rename(console_log.rotated(log))  # as virtlogd rotates a full log
    log.write_bytes(b"latest\n")
    assert console_log.tail(log, 100) == "first boot\nlatest\n"
    assert console_log.tail(log, 9) == "t\nlatest\n"
    assert console_log.tail(log, 7) == "latest\n"  # the current file alone
    (tmp_path / "console.log.1").write_bytes(b"older\n")  # never needed: .0 holds max_size
    assert console_log.tail(log, 100) == "first boot\nlatest\n"


def test_virtlogd_cap_from_its_config(tmp_path):
    conf = tmp_path / "virtlogd.conf"
    assert console_log.logd_cap(conf) == (2 * MIB, 3)  # no file: virtlogd's defaults
    conf.write_text("#max_size = 1\nmax_size = 1048576  # 1 MiB\nmax_backups = 1\n")
    assert console_log.logd_cap(conf) == (MIB, 1)


def test_problems_name_what_to_change(tmp_path):
    qemu, logd = tmp_path / "qemu.conf", tmp_path / "virtlogd.conf"
    qemu.write_text('#stdio_handler = "file"\n')
    assert console_log.logd_problems(8 * MIB, qemu, logd) == []  # defaults: 4 files of 2 MiB
    [too_much] = console_log.logd_problems(4 * MIB, qemu, logd)
    assert "8388608" in too_much and "console_log_max_bytes" in too_much and str(logd) in too_much
    logd.write_text("max_size = 0\n")
    [never] = console_log.logd_problems(8 * MIB, qemu, logd)
    assert "max_size = 0" in never
    logd.write_text("max_size = 1048576\nmax_backups = 1\n")
    qemu.write_text('stdio_handler = "file"\n')
    [handler] = console_log.logd_problems(8 * MIB, qemu, logd)
    assert 'stdio_handler = "logd"' in handler and str(qemu) in handler


def test_console_api_reads_across_rotation(client, launch, wait, service):
    iid = launch()["instances"][0]["id"]
    wait()
    log = service.provisioner.files(iid).console
    log.with_name("console.log.0").write_bytes(b"older boot\n")
    log.write_bytes(b"latest line\n")
    body = client.get(f"/v1/instances/{iid}/console").get_json()
    assert body["output"] == "older boot\nlatest line\n"
