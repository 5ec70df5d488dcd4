"""``computed ssh|exec``: a shell on an instance, or one command, over SSH (paramiko)."""

from __future__ import annotations

import os
import select
import tempfile
from pathlib import Path
import signal
import sys
import threading

import click
import paramiko

from computed.compute.state import State
from computed.virt import ssh as computed_ssh

from .client import ApiClient, part, with_client

CONNECT_TIMEOUT = 15.0
KNOWN_HOSTS_ENV = "COMPUTED_KNOWN_HOSTS"
HOST_KEY_NOTE = ("The instance's host key must be the one the service made for it (shown by `computed "
                 "describe`); any other is refused. Its line is written to computed's own known_hosts file "
                 f"(${KNOWN_HOSTS_ENV}, default ~/.config/computed/known_hosts), under the instance's id and "
                 "its SSH endpoint, for plain ssh: ssh -o UserKnownHostsFile=FILE -o HostKeyAlias=INSTANCE ...")


def known_hosts_file() -> Path:
    if os.environ.get(KNOWN_HOSTS_ENV):
        return Path(os.environ[KNOWN_HOSTS_ENV])
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "computed" / "known_hosts"


def remember_host_key(instance_id: str, endpoint: str, host_key: str) -> Path:
    """Write the instance's host key into computed's known_hosts file, under its id (for
    HostKeyAlias) and its endpoint (``[host]:port``), replacing what either name had: a port
    reused by a later instance gets that instance's key, with no "host key changed" warning."""
    path = known_hosts_file()
    key = " ".join(host_key.split()[:2])
    names = {instance_id, endpoint}
    try:
        kept = [line for line in path.read_text().splitlines()
                if line.strip() and line.split()[0] not in names]
    except FileNotFoundError:
        kept = []
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".known_hosts.")
    with os.fdopen(fd, "w") as f:
        f.write("".join(f"{line}\n" for line in kept + [f"{instance_id} {key}", f"{endpoint} {key}"]))
    os.replace(tmp, path)
    return path


def _load_key(path: str) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException:
        passphrase = click.prompt(f"passphrase for {path}", hide_input=True, err=True)
        try:
            return paramiko.PKey.from_path(path, passphrase=passphrase.encode())
        except paramiko.SSHException as e:
            raise click.ClickException(f"cannot read the private key {path}: {e}") from None
    except (paramiko.SSHException, ValueError) as e:
        raise click.ClickException(f"cannot read the private key {path}: {e}") from None
    except OSError as e:
        raise click.ClickException(f"cannot read the private key {path}: {e.strerror}") from None


def connect(client: ApiClient, instance_id: str, key_file: str | None, user: str | None) -> paramiko.SSHClient:
    """An SSH connection to INSTANCE_ID, logged in with KEY_FILE (default ./KEY_NAME.pem)."""
    inst = client.get(f"/v1/instances/{part(instance_id)}")
    state = inst["state"]["name"]
    ssh = inst.get("ssh") or {}
    if state != State.RUNNING or not ssh.get("host") or not ssh.get("port"):
        raise click.ClickException(f"{inst['id']} is {state}: there is nothing to log in to"
                                   + ("; start it with `computed start --wait`" if state == State.STOPPED else ""))
    if key_file is None:
        if not inst.get("key_name"):
            raise click.ClickException(f"{inst['id']} was launched without a key pair: give the private key "
                                       "that may log in with -i KEYFILE")
        key_file = f"{inst['key_name']}.pem"
        if not os.path.exists(key_file):
            raise click.ClickException(f"no private key {key_file} here for key pair {inst['key_name']}: "
                                       "give its path with -i KEYFILE")
    elif not os.path.exists(key_file):
        raise click.ClickException(f"the key file {key_file} does not exist")
    pkey = _load_key(key_file)
    user = user or ssh.get("user")
    if not user:
        raise click.ClickException(f"the image of {inst['id']} names no login user: give one with -l USER")
    if not (inst.get("ready") or {}).get("ssh"):
        click.echo(f"{inst['id']} has not answered SSH yet (still booting?); trying anyway", err=True)
    where = f"{user}@{ssh['host']}:{ssh['port']}"
    host_key = ssh.get("host_key")
    if host_key:
        remember_host_key(inst["id"], computed_ssh.host_key_entry(ssh["host"], ssh["port"]), host_key)
    else:
        click.echo(f"the service knows no host key for {inst['id']} (launched before it made them): "
                   "the key it shows is taken as it is", err=True)
    try:
        return computed_ssh.connect(ssh["host"], ssh["port"], user, pkey, timeout=CONNECT_TIMEOUT, host_key=host_key)
    except paramiko.BadHostKeyException as e:
        raise click.ClickException(
            f"{where} showed the host key {computed_ssh.fingerprint(f'{e.key.get_name()} {e.key.get_base64()}')}, "
            f"not {inst['id']}'s own {computed_ssh.fingerprint(host_key)}: not connecting (another machine "
            "may be answering on that port)") from None
    except paramiko.AuthenticationException:
        raise click.ClickException(f"{where} did not accept the key {key_file}") from None
    except (OSError, EOFError, paramiko.SSHException) as e:
        raise click.ClickException(f"cannot connect to {inst['id']} at {where}: {e or type(e).__name__}") from None


def _exit_code(status: int) -> int:
    """The remote exit status as ours; 255 (as ssh) when the server sent none."""
    return status if 0 <= status <= 255 else 255


def _pump_stdin(channel: paramiko.Channel, stream) -> None:
    """Copy STREAM to CHANNEL until its end, then send EOF."""
    read = getattr(stream, "read1", stream.read)
    try:
        while True:
            data = read(32768)
            if not data:
                break
            channel.sendall(data)
    except (OSError, EOFError, paramiko.SSHException, ValueError):
        pass
    finally:
        try:
            channel.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            pass


def _binary(name: str):
    """sys.stdin/stdout/stderr (as they are now: click's test runner swaps them) for bytes."""
    stream = getattr(sys, name)
    if name != "stdin":
        stream.flush()  # what was written as text goes first
    return getattr(stream, "buffer", stream)


def stream(channel: paramiko.Channel, forward_stdin: bool) -> int:
    """Copy CHANNEL's stdout and stderr to ours (and our stdin to it if FORWARD_STDIN) until
    the remote side is done; its exit status."""
    out = _binary("stdout")
    err = _binary("stderr")
    if forward_stdin:
        threading.Thread(target=_pump_stdin, args=(channel, _binary("stdin")),
                         name="stdin", daemon=True).start()
    else:
        channel.shutdown_write()

    def drain() -> None:
        while channel.recv_ready():
            out.write(channel.recv(32768))
            out.flush()
        while channel.recv_stderr_ready():
            err.write(channel.recv_stderr(32768))
            err.flush()

    while not (channel.eof_received or channel.closed):
        select.select([channel], [], [], 0.5)
        drain()
    drain()
    return channel.recv_exit_status()


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def interactive(channel: paramiko.Channel) -> int:
    """A shell on a pty: our terminal raw, keys to the channel, its output to ours, window
    size changes passed on; the terminal restored however it ends."""
    import termios
    import tty

    stdin_fd, stdout_fd = sys.stdin.fileno(), sys.stdout.fileno()

    def size() -> tuple[int, int]:
        try:
            s = os.get_terminal_size(stdout_fd)
        except OSError:
            s = os.get_terminal_size(stdin_fd)
        return s.columns, s.lines

    cols, rows = size()
    channel.get_pty(term=os.environ.get("TERM", "xterm"), width=cols, height=rows)
    channel.invoke_shell()

    def resized(signum, frame) -> None:
        try:
            channel.resize_pty(*size())
        except (OSError, paramiko.SSHException):
            pass

    stderr_fd = sys.stderr.fileno()
    saved = termios.tcgetattr(stdin_fd)
    previous = signal.signal(signal.SIGWINCH, resized)
    try:
        tty.setraw(stdin_fd)
        reading_stdin = True
        while True:
            watched = [channel, stdin_fd] if reading_stdin else [channel]
            ready, _, _ = select.select(watched, [], [])
            if channel in ready:
                # the channel's fd wakes us for output, error output and the end alike
                while channel.recv_ready():
                    _write_all(stdout_fd, channel.recv(32768))
                while channel.recv_stderr_ready():
                    _write_all(stderr_fd, channel.recv_stderr(32768))
                if channel.eof_received or channel.closed:
                    break
            if stdin_fd in ready:
                data = os.read(stdin_fd, 4096)
                if data:
                    channel.sendall(data)
                else:
                    reading_stdin = False
                    channel.shutdown_write()
    finally:
        termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, previous)
    return channel.recv_exit_status()


def _stdin_is_tty() -> bool:
    try:
        return os.isatty(sys.stdin.fileno())
    except (AttributeError, ValueError, OSError):
        return False


def _stdout_is_tty() -> bool:
    try:
        return os.isatty(sys.stdout.fileno())
    except (AttributeError, ValueError, OSError):
        return False


key_option = click.option("-i", "key_file", metavar="KEYFILE",
                          help="The private key (default: ./KEY_NAME.pem for the instance's key pair).")
user_option = click.option("-l", "user", metavar="USER", help="Log in as USER (default: the image's user).")


@click.command(help=f"""Open a shell on INSTANCE over SSH, as the image's user.

On a terminal the shell gets a pty (like ssh); otherwise stdin goes to a shell without one.
Exits with the shell's exit status. {HOST_KEY_NOTE}""")
@key_option
@user_option
@click.argument("instance_id", metavar="INSTANCE")
@with_client
def ssh(client: ApiClient, key_file, user, instance_id) -> None:
    conn = connect(client, instance_id, key_file, user)
    try:
        channel = conn.get_transport().open_session()
        if _stdin_is_tty() and _stdout_is_tty():
            status = interactive(channel)
        else:
            channel.invoke_shell()
            status = stream(channel, forward_stdin=True)
    finally:
        conn.close()
    raise SystemExit(_exit_code(status))


@click.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
               help=f"""Run a command on INSTANCE over SSH (no pty): its stdout and stderr stream to
ours, and we exit with its exit status.

Options go before INSTANCE; the words after it (after `--` if you like) are joined with
spaces into the remote shell command, as ssh does. Our stdin is passed to the command when
it is a pipe or a file. {HOST_KEY_NOTE}""")
@key_option
@user_option
@click.argument("instance_id", metavar="INSTANCE")
@click.argument("command", metavar="[--] CMD...", nargs=-1, required=True, type=click.UNPROCESSED)
@with_client
def exec_(client: ApiClient, key_file, user, instance_id, command) -> None:
    if command[:1] == ("--",):
        command = command[1:]
    if not command:
        raise click.UsageError("give the command to run after INSTANCE")
    conn = connect(client, instance_id, key_file, user)
    try:
        channel = conn.get_transport().open_session()
        channel.exec_command(" ".join(command))
        status = stream(channel, forward_stdin=not _stdin_is_tty())
    finally:
        conn.close()
    raise SystemExit(_exit_code(status))
