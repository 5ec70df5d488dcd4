"""The CLI's service commands against the real API (Flask under waitress, libvirt's test
driver, a fake image whose disk is a real qcow2), and ``exec``/``ssh`` against a small
paramiko SSH server standing in for a guest on the instance's SSH port."""

from __future__ import annotations

from decimal import Decimal

import datetime as dt
import fcntl
import json
import os
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import termios
import threading
import time

import paramiko
import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import select as sql_select
from sqlalchemy import update

from api.app import create_app
from computed.virt import ssh as computed_ssh
from computed.cli import cli
from computed.settings import Settings
from computed.store.models import Instance
from images.library import ImageLibrary
from tests.fakes import publish_with_disk
from tests.cleanup import ADMIN, terminate_all
from tests.http_server import ThreadedServer

IMAGE = "debian-12-podman"
#: sees every account's instances: for cleaning up behind the tests

#: the CLI's account, made by the server fixture
CREDENTIALS: dict[str, str] = {}


def credentials_env() -> dict[str, str]:
    return {"COMPUTED_ACCESS_KEY_ID": CREDENTIALS["access_key_id"],
            "COMPUTED_SECRET_ACCESS_KEY": CREDENTIALS["secret_access_key"]}


def auth() -> tuple[str, str]:
    return CREDENTIALS["access_key_id"], CREDENTIALS["secret_access_key"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(the API's base URL, its Service): the API served from a background thread."""
    var = tmp_path_factory.mktemp("var")
    low = free_port() // 100 * 100 % 20000 + 40000  # a range away from the default 42200-42999
    settings = Settings.load(environ={}, var_dir=var, libvirt_uri="test:///default", ssh_ports=(low, low + 99),
                             memory_overcommit=8.0)  # the test driver's host has 3 GiB
    publish_with_disk(ImageLibrary(settings.image_library), IMAGE)
    app = create_app(settings)
    server = ThreadedServer(app)
    service = app.extensions["computed"]
    CREDENTIALS.update(service.accounts.create("cli").to_dict())
    try:
        yield server.url, service
    finally:
        terminate_all(service)  # leave no domains behind in the process-wide test:///default host
        server.close()
        service.close()


@pytest.fixture
def api(server) -> str:
    return server[0]


@pytest.fixture
def run(api, tmp_path, monkeypatch):
    """run(*args, input=None, api=URL) -> click Result, in a fresh working directory."""
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str, input=None, api_url: str = api):
        env = {"COMPUTED_API_URL": api_url, "COMPUTED_VAR_DIR": str(tmp_path / "client-var"),
               "COMPUTED_CONFIG": None, "COLUMNS": "200"} | credentials_env()
        return CliRunner(env=env).invoke(cli, list(args), input=input, catch_exceptions=False)

    return invoke


def get(api: str, instance_id: str) -> dict:
    return requests.get(f"{api}/v1/instances/{instance_id}", auth=auth(), timeout=10).json()


def wait_state(api: str, instance_id: str, state: str, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        inst = get(api, instance_id)
        if inst["state"]["name"] == state:
            return inst
        if time.monotonic() > deadline:
            pytest.fail(f"{instance_id} is {inst['state']['name']}, not {state}, after {timeout} s")
        time.sleep(0.1)


def launched_id(result) -> str:
    assert result.exit_code == 0, result.output
    line = result.stdout.splitlines()[0]
    assert line.startswith("i-")
    return line.split()[0]


# -- key pairs ---------------------------------------------------------------------------------

def test_keypair_create_saves_a_0600_file_and_never_overwrites(run, api, tmp_path):
    result = run("keypair", "create", "k-create")
    assert result.exit_code == 0, result.output
    pem = tmp_path / "k-create.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    text = pem.read_text()
    assert text.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert "PRIVATE KEY" not in result.stdout + result.stderr
    assert "k-create.pem" in result.stderr and "SHA256:" in result.stderr
    key = paramiko.PKey.from_path(pem)
    listed = {p["name"]: p for p in json.loads(run("keypair", "ls", "--json").stdout)}
    assert listed["k-create"]["fingerprint"] == computed_ssh.fingerprint(f"{key.get_name()} {key.get_base64()}")

    # the same name again: the existing file stays as it was
    again = run("keypair", "create", "k-create")
    assert again.exit_code == 1
    assert "already exists" in again.stderr
    assert pem.read_text() == text

    # a new pair whose output file exists: refused before the pair is made
    existing = tmp_path / "mine.pem"
    existing.write_text("keep me")
    refused = run("keypair", "create", "k-other", "--output", str(existing))
    assert refused.exit_code == 1 and "already exists" in refused.stderr
    assert existing.read_text() == "keep me"
    assert "k-other" not in [p["name"] for p in json.loads(run("keypair", "ls", "--json").stdout)]

    # a name the service rejects leaves no file behind
    duplicate = run("keypair", "create", "k-create", "--output", "dup.pem")
    assert duplicate.exit_code == 1 and "InvalidKeyPair.Duplicate" in duplicate.stderr
    assert not (tmp_path / "dup.pem").exists()


def test_keypair_create_to_stdout(run, tmp_path):
    result = run("keypair", "create", "k-stdout", "--output", "-")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert not list(tmp_path.glob("*.pem"))
    run("keypair", "rm", "k-stdout")


def test_keypair_import_ls_rm(run, tmp_path):
    pair = computed_ssh.generate_keypair("me@laptop")
    (tmp_path / "id.pub").write_text(pair.public_openssh + "\n")
    result = run("keypair", "import", "k-import", "id.pub")
    assert result.exit_code == 0, result.output
    assert pair.fingerprint in result.stderr

    listed = json.loads(run("keypair", "ls", "--json").stdout)
    [mine] = [p for p in listed if p["name"] == "k-import"]
    assert mine["fingerprint"] == pair.fingerprint and mine["key_type"] == "ssh-ed25519"
    assert "private_key" not in mine
    table = run("keypair", "ls")
    assert "k-import" in table.stdout and pair.fingerprint in table.stdout

    (tmp_path / "secret").write_text(pair.private_openssh)
    assert "private key" in run("keypair", "import", "k-secret", "secret").stderr

    assert run("keypair", "rm", "k-import").exit_code == 0
    assert "k-import" not in [p["name"] for p in json.loads(run("keypair", "ls", "--json").stdout)]
    gone = run("keypair", "rm", "k-import")
    assert gone.exit_code == 1 and "InvalidKeyPair.NotFound" in gone.stderr

    (tmp_path / "junk.pub").write_text("ssh-ed25519 notbase64 x\n")
    junk = run("keypair", "import", "k-junk", "junk.pub")
    assert junk.exit_code == 1 and "InvalidKey.Format" in junk.stderr


# -- instances ---------------------------------------------------------------------------------

def test_launch_and_lifecycle(run, api, tmp_path):
    (tmp_path / "user-data").write_bytes(b"#cloud-config\nruncmd: [true]\n\xff")
    result = run("launch", "--size", "t3.nano", "--no-wait", "--tag", "suite=cli", "--tag", "empty=",
                 "--user-data", "user-data")
    instance_id = launched_id(result)
    assert result.stdout.split(None, 1)[1].startswith("ssh -p ")
    assert "debian@127.0.0.1" in result.stdout
    assert "not waiting" in result.stderr

    running = wait_state(api, instance_id, "running")
    assert running["tags"] == {"suite": "cli", "empty": ""}
    assert running["image"] == IMAGE

    listed = json.loads(run("ls", "--json", "--tag", "suite=cli").stdout)
    assert [i["id"] for i in listed] == [instance_id]
    assert json.loads(run("ls", "--json", "--tag", "suite=other").stdout) == []
    assert instance_id in [i["id"] for i in json.loads(run("ls", "--json", "--state", "running").stdout)]
    table = run("ls", "--tag", "suite")
    assert table.exit_code == 0
    row = next(line for line in table.stdout.splitlines() if instance_id in line)
    port = running["ssh"]["port"]
    assert "running" in row and "t3.nano" in row and IMAGE in row and f"127.0.0.1:{port}" in row
    assert "ID" in table.stdout and "LAUNCHED" in table.stdout

    shown = run("show", instance_id)
    assert shown.exit_code == 0
    assert "running (16)" in shown.stdout and "suite=cli" in shown.stdout
    assert f"ssh -p {port} debian@127.0.0.1" in shown.stdout
    assert json.loads(run("show", instance_id, "--json").stdout)["id"] == instance_id

    console = run("console", instance_id)
    assert console.exit_code == 0 and "no console output" in console.stderr

    stopping = run("stop", instance_id)
    assert stopping.exit_code == 0 and stopping.stdout == f"{instance_id}  stopping\n"
    wait_state(api, instance_id, "stopped")
    assert run("stop", instance_id, "--wait", "--timeout", "10").stdout == f"{instance_id}  stopped\n"

    assert run("start", instance_id).stdout == f"{instance_id}  pending\n"
    # started again: no change; --wait waits for SSH, which the test driver never answers
    waited = run("start", instance_id, "--wait", "--timeout", "0.5")
    assert waited.exit_code == 1 and waited.stdout == ""
    assert "timed out after 0.5 s waiting for the instances to run and answer SSH: still " + instance_id in waited.stderr
    wait_state(api, instance_id, "running")
    assert run("reboot", instance_id).stdout == f"{instance_id}  running\n"

    terminated = run("terminate", instance_id, "--wait", "--timeout", "20")
    assert terminated.exit_code == 0, terminated.output
    assert terminated.stdout == f"{instance_id}  terminated\n"
    final = json.loads(run("show", instance_id, "--json").stdout)
    assert final["state"]["name"] == "terminated"
    assert final["state_reason"]["code"] == "Client.UserInitiatedShutdown"
    assert "terminated" in run("show", instance_id).stdout
    # terminating again is no error; stopping a terminated instance is
    assert run("terminate", instance_id).exit_code == 0
    wrong = run("start", instance_id)
    assert wrong.exit_code == 1 and "IncorrectInstanceState" in wrong.stderr


def test_launch_waits_and_times_out(run, api):
    result = run("launch", "--size", "t3.nano", "--timeout", "1", "--tag", "suite=timeout")
    assert result.exit_code == 1
    assert "timed out after 1 s waiting for SSH" in result.stderr
    assert "computed ls" in result.stderr
    [inst] = json.loads(run("ls", "--json", "--tag", "suite=timeout").stdout)
    assert inst["id"] in result.stderr
    assert inst["id"] in result.stderr.split("launched ")[1]
    # on the test driver the instance runs but never answers SSH
    assert inst["state"]["name"] in ("pending", "running")
    assert "ssh: not yet" in result.stderr  # the progress lines (stderr is not a terminal)
    assert run("terminate", inst["id"]).exit_code == 0


def test_launch_waits_for_ssh_and_reports_failures(run, server):
    """What the test driver cannot do, done to the store: one instance answers SSH, the
    other ends terminated while the CLI waits."""
    from computed.store.models import Instance, Tag

    _, service = server
    finished = threading.Event()

    def guests() -> None:
        ready = terminated = False
        while not finished.is_set() and not (ready and terminated):
            with service.db.session() as s:
                rows = list(s.scalars(sql_select(Instance).join(Tag).where(Tag.key == "suite", Tag.value == "ready",
                                                                       Instance.state == "running")
                                      .order_by(Instance.launch_index)))
                if len(rows) == 2 and not ready:
                    rows[0].ready_ssh = ready = True
            if ready and not terminated:
                service.instances.terminate(ADMIN, rows[1].id)
                terminated = True
            time.sleep(0.05)

    helper = threading.Thread(target=guests, daemon=True)
    helper.start()
    try:
        result = run("launch", "--size", "t3.nano", "--count", "2", "--tag", "suite=ready", "--timeout", "15")
    finally:
        finished.set()
        helper.join(timeout=5)
    assert result.exit_code == 1, result.output
    instances = {i["launch_index"]: i for i in json.loads(run("ls", "--json", "--tag", "suite=ready").stdout)}
    good, bad = instances[0], instances[1]
    port = good["ssh"]["port"]
    assert result.stdout == f"{good['id']}  ssh -p {port} debian@127.0.0.1\n"
    assert (f"Error: {bad['id']} is terminated: Client.UserInitiatedShutdown: User initiated shutdown"
            in result.stderr)
    assert f"{good['id']}  running  ssh: ready" in result.stderr  # the progress lines


def test_launch_with_count_and_client_token(run, api):
    first = run("launch", "--size", "t3.nano", "--count", "2", "--client-token", "tok-1", "--no-wait")
    assert first.exit_code == 0, first.output
    ids = [line.split()[0] for line in first.stdout.splitlines()]
    assert len(ids) == 2
    again = run("launch", "--size", "t3.nano", "--count", "2", "--client-token", "tok-1", "--no-wait")
    assert [line.split()[0] for line in again.stdout.splitlines()] == ids
    mismatch = run("launch", "--size", "t3.micro", "--count", "2", "--client-token", "tok-1", "--no-wait")
    assert mismatch.exit_code == 1 and "IdempotentParameterMismatch" in mismatch.stderr
    done = run("terminate", *ids, "--wait", "--timeout", "20")
    assert done.exit_code == 0, done.output
    assert done.stdout == "".join(f"{i}  terminated\n" for i in ids)


def test_errors(run, api):
    unknown_size = run("launch", "--size", "t9.huge", "--no-wait")
    assert unknown_size.exit_code == 1
    assert "Error: InvalidInstanceType: the size 't9.huge' does not exist" in unknown_size.stderr
    assert "t3.nano" in unknown_size.stderr

    unknown_image = run("launch", "--size", "t3.nano", "--image", "nope", "--no-wait")
    assert unknown_image.exit_code == 1 and "InvalidAMIID.NotFound" in unknown_image.stderr
    unknown_key = run("launch", "--size", "t3.nano", "--key", "nobody", "--no-wait")
    assert unknown_key.exit_code == 1 and "InvalidKeyPair.NotFound" in unknown_key.stderr

    missing = run("show", "i-00000000000000000")
    assert missing.exit_code == 1 and "InvalidInstanceID.NotFound" in missing.stderr
    malformed = run("show", "web-1")
    assert malformed.exit_code == 1 and "InvalidInstanceID.Malformed" in malformed.stderr
    assert "InvalidInstanceID.NotFound" in run("console", "i-00000000000000000").stderr

    # one bad id among several: the others are still acted on, and the exit status says so
    ok = launched_id(run("launch", "--size", "t3.nano", "--no-wait"))
    mixed = run("terminate", "i-00000000000000000", ok)
    assert mixed.exit_code == 1
    assert "i-00000000000000000: InvalidInstanceID.NotFound" in mixed.stderr
    assert f"{ok}  shutting-down" in mixed.stdout

    bad_tag = run("launch", "--size", "t3.nano", "--tag", "novalue")
    assert bad_tag.exit_code == 2 and "KEY=VALUE" in bad_tag.stderr
    bad_state = run("ls", "--state", "sleeping")
    assert bad_state.exit_code == 2
    assert run("launch", "--no-wait").exit_code == 2  # --size is required


def test_service_not_running(run):
    url = f"http://127.0.0.1:{free_port()}"
    for args in (("ls",), ("keypair", "ls"), ("launch", "--size", "t3.nano"), ("ssh", "i-00000000000000000")):
        result = run(*args, api_url=url)
        assert result.exit_code == 1
        assert f"the computed service is not running at {url}" in result.stderr
        assert "scripts/serve" in result.stderr and "computed serve" in result.stderr


def test_api_option_overrides_the_environment(run, api):
    result = run("ls", "--json", "--api", api, api_url="http://127.0.0.1:1")
    assert result.exit_code == 0
    assert isinstance(json.loads(result.stdout), list)


# -- ssh and exec -------------------------------------------------------------------------------

class FakeGuest:
    """An SSH server on PORT that lets USER in with KEY and answers like a guest would:
    ``exec`` echoes the command and its stdin on stdout, writes to stderr and exits 3; a
    shell without a pty greets, echoes its stdin and exits 0; a shell on a pty greets,
    echoes each byte as it comes and exits 7 after ``exit\\r``."""

    def __init__(self, port: int, user: str, key: paramiko.PKey):
        self.user, self.key = user, key
        self.host_key = computed_ssh.generate_keypair().pkey()
        self.commands: list[str] = []
        self.ptys: list[tuple[str, int, int]] = []
        self.resizes: list[tuple[int, int]] = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(4)
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        transport = paramiko.Transport(conn)
        transport.add_server_key(self.host_key)
        requested = threading.Event()
        mode: list[str] = []
        guest = self

        class Interface(paramiko.ServerInterface):
            def get_allowed_auths(self, username):
                return "publickey"

            def check_auth_publickey(self, username, key):
                ok = username == guest.user and key.get_base64() == guest.key.get_base64()
                return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

            def check_channel_request(self, kind, chanid):
                if kind == "session":
                    return paramiko.OPEN_SUCCEEDED
                return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

            def check_channel_pty_request(self, channel, term, width, height, pixelwidth, pixelheight, modes):
                guest.ptys.append((term.decode() if isinstance(term, bytes) else term, width, height))
                return True

            def check_channel_window_change_request(self, channel, width, height, pixelwidth, pixelheight):
                guest.resizes.append((width, height))
                return True

            def check_channel_exec_request(self, channel, command):
                mode.append(command.decode())
                requested.set()
                return True

            def check_channel_shell_request(self, channel):
                mode.append("")
                requested.set()
                return True

        try:
            transport.start_server(server=Interface())
            channel = transport.accept(10)
            if channel is None or not requested.wait(10):
                return
            command = mode[0]
            self.commands.append(command)
            if not command and self.ptys:
                channel.sendall(b"welcome\r\n")
                typed = b""
                while b"exit\r" not in typed:
                    chunk = channel.recv(4096)
                    if not chunk:
                        break
                    typed += chunk
                    channel.sendall(chunk)
                channel.sendall(b"\r\nbye\r\n")
                status = 7
            else:
                stdin = b""
                while chunk := channel.recv(4096):
                    stdin += chunk
                if command:
                    channel.sendall(f"ran: {command}\n".encode() + stdin)
                    channel.sendall_stderr(b"to stderr\n")
                    status = 3
                else:
                    channel.sendall(b"welcome\n" + stdin)
                    status = 0
            channel.send_exit_status(status)
            channel.shutdown_write()
            channel.close()
        except (EOFError, OSError, paramiko.SSHException):
            pass
        finally:
            time.sleep(0.1)
            transport.close()


@pytest.fixture
def guest(run, api, server, tmp_path):
    """A running instance launched with key pair k-guest (./k-guest.pem), and a FakeGuest on its SSH port."""
    assert run("keypair", "create", "k-guest").exit_code == 0
    instance_id = launched_id(run("launch", "--size", "t3.nano", "--key", "k-guest", "--no-wait"))
    inst = wait_state(api, instance_id, "running")
    assert inst["ssh"]["user"] == "debian"
    service = server[1]
    server = FakeGuest(inst["ssh"]["port"], "debian", paramiko.PKey.from_path(tmp_path / "k-guest.pem"))
    # the fake plays the guest: the store is told its host key is the one the service made
    host_key = f"{server.host_key.get_name()} {server.host_key.get_base64()}"
    with service.db.session() as s:
        s.execute(update(Instance).where(Instance.id == instance_id).values(ssh_host_key=host_key))
    try:
        yield inst, server
    finally:
        server.close()
        run("terminate", instance_id)
        run("keypair", "rm", "k-guest")


def test_exec_streams_output_and_exit_status(run, guest):
    inst, server = guest
    result = run("exec", inst["id"], "--", "echo", "hello", "-n", input=b"from stdin\n")
    assert result.exit_code == 3, (result.stdout, result.stderr)
    assert result.stdout == "ran: echo hello -n\nfrom stdin\n"
    assert "to stderr" in result.stderr
    assert "has not answered SSH yet" in result.stderr  # the test driver never marks it ready
    assert server.commands == ["echo hello -n"]

    with_key = run("exec", "-i", "k-guest.pem", inst["id"], "uname", "-a")
    assert with_key.exit_code == 3 and with_key.stdout.startswith("ran: uname -a\n")


def test_ssh_without_a_terminal_runs_a_shell(run, guest):
    inst, server = guest
    result = run("ssh", inst["id"], input=b"echo hi\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == "welcome\necho hi\n"
    assert server.commands == [""]


def test_exec_with_the_wrong_key_or_user(run, guest, tmp_path):
    inst, _ = guest
    other = computed_ssh.generate_keypair()
    (tmp_path / "other.pem").write_text(other.private_openssh)
    result = run("exec", "-i", "other.pem", inst["id"], "true")
    assert result.exit_code == 1 and "did not accept the key other.pem" in result.stderr
    as_root = run("exec", "-l", "root", inst["id"], "true")
    assert as_root.exit_code == 1 and "root@127.0.0.1" in as_root.stderr


def test_ssh_and_exec_argument_errors(run, api, tmp_path):
    assert run("keypair", "create", "k-away", "--output", "elsewhere.pem").exit_code == 0
    keyed = launched_id(run("launch", "--size", "t3.nano", "--key", "k-away", "--no-wait"))
    keyless = launched_id(run("launch", "--size", "t3.nano", "--no-wait"))
    wait_state(api, keyed, "running")
    wait_state(api, keyless, "running")

    no_default = run("ssh", keyed)
    assert no_default.exit_code == 1
    assert "no private key k-away.pem here for key pair k-away" in no_default.stderr and "-i" in no_default.stderr
    missing = run("exec", "-i", "missing.pem", keyed, "true")
    assert missing.exit_code == 1 and "missing.pem does not exist" in missing.stderr
    without_key = run("exec", keyless, "true")
    assert without_key.exit_code == 1 and "launched without a key pair" in without_key.stderr
    no_command = run("exec", keyed)
    assert no_command.exit_code == 2
    only_dashes = run("exec", keyed, "--")
    assert only_dashes.exit_code == 2 and "give the command" in only_dashes.stderr
    unknown = run("exec", "i-00000000000000000", "true")
    assert unknown.exit_code == 1 and "InvalidInstanceID.NotFound" in unknown.stderr
    (tmp_path / "garbage.pem").write_text("not a key")
    garbage = run("ssh", "-i", "garbage.pem", keyed)
    assert garbage.exit_code == 1 and "cannot read the private key garbage.pem" in garbage.stderr

    run("stop", keyed, "--wait", "--timeout", "10")
    stopped = run("ssh", "-i", "elsewhere.pem", keyed)
    assert stopped.exit_code == 1 and "is stopped" in stopped.stderr
    run("terminate", keyed, keyless)
    run("keypair", "rm", "k-away")


def _read_until(fd: int, wanted: bytes, timeout: float = 10) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"no {wanted!r} on the terminal; got {seen!r}")
        if select.select([fd], [], [], left)[0]:
            seen += os.read(fd, 4096)
    return seen


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def test_ssh_on_a_terminal_is_interactive(api, guest, tmp_path):
    """`computed ssh` on a pty (a real process): raw keys, window size, exit status, and
    the terminal restored as it was."""
    inst, server = guest
    master, slave = os.openpty()
    try:
        _set_size(slave, 30, 100)
        before = termios.tcgetattr(slave)
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMPUTED_")}
        env |= {"COMPUTED_API_URL": api, "COMPUTED_VAR_DIR": str(tmp_path / "client-var"), "TERM": "xterm-test"}
        env |= credentials_env()
        command = [sys.executable, "-P", "-c", "from computed.cli import main; main()", "ssh", inst["id"]]
        proc = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, cwd=tmp_path, env=env,
                                start_new_session=True)
        try:
            _read_until(master, b"welcome")
            assert server.ptys == [("xterm-test", 100, 30)]
            assert not termios.tcgetattr(slave)[3] & (termios.ECHO | termios.ICANON)  # raw: no local echo
            os.write(master, b"x")  # no newline: only a raw terminal passes it on at once
            _read_until(master, b"x")
            _set_size(slave, 40, 120)
            proc.send_signal(signal.SIGWINCH)
            deadline = time.monotonic() + 10
            while (120, 40) not in server.resizes and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server.resizes[-1:] == [(120, 40)]
            os.write(master, b"exit\r")
            _read_until(master, b"bye")
            assert proc.wait(timeout=10) == 7
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)
        os.close(slave)


def test_report_formats(run, api, tmp_path):
    result = run("launch", "--size", "t3.nano", "--tag", "team=report", "--no-wait")
    instance_id = launched_id(result)
    wait_state(api, instance_id, "running")
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    span = ("--from", "today", "--to", later)  # the service never bills past its own now
    table = run("report", *span)
    assert table.exit_code == 0, table.output
    assert instance_id in table.stdout and "team=report" in table.stdout and "total:" in table.stdout
    as_json = json.loads(run("report", *span, "--format", "json").stdout)
    assert instance_id in {r["instance_id"] for r in as_json["rows"]}
    assert Decimal(as_json["total"][0]["cost"]) == sum(Decimal(r["cost"]) for r in as_json["rows"])
    as_csv = run("report", *span, "--format", "csv").stdout
    assert as_csv.startswith("identity/TimeInterval,") and instance_id in as_csv
    png = tmp_path / "cost.png"
    assert run("report", *span, "--format", "png", "--output", str(png)).exit_code == 0
    assert png.read_bytes().startswith(b"\x89PNG")
    bad = run("report", "--from", "now", "--to", "yesterday")
    assert bad.exit_code == 1 and "end must be after start" in bad.stderr
