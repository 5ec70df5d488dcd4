"""``computed launch|ls|show|stop|start|reboot|terminate|console``: instances, through the API."""

from __future__ import annotations

import base64
import datetime as dt
import json
import shlex
import time
from collections.abc import Callable

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from computed.compute.state import NAMES, State

from .client import ApiClient, ApiError, part, with_client
from .ports import PORT_HELP, describe, parse_specs

#: seconds between two looks at the instances while waiting
POLL_INTERVAL = 1.0
DEFAULT_TIMEOUT = 900


# -- presenting instances --------------------------------------------------------------------

def ssh_command(inst: dict) -> str | None:
    """An OpenSSH command line that logs in to INST, or None while it has no SSH endpoint."""
    ssh = inst.get("ssh") or {}
    if not (ssh.get("host") and ssh.get("port") and ssh.get("user")):
        return None
    key = f"-i {shlex.quote(inst['key_name'] + '.pem')} " if inst.get("key_name") else ""
    return f"ssh {key}-p {ssh['port']} {shlex.quote(ssh['user'])}@{ssh['host']}"


def _state(inst: dict) -> str:
    return (inst.get("state") or {}).get("name", "?")


def _reason(inst: dict) -> str:
    reason = inst.get("state_reason") or {}
    if not reason.get("code"):
        return ""
    return f"{reason['code']}: {reason.get('message') or ''}".rstrip(": ")


def _ready(inst: dict) -> str:
    ready = inst.get("ready") or {}
    parts = [name for key, name in (("ssh", "ssh"), ("container_engine", "engine")) if ready.get(key)]
    return ", ".join(parts) or "-"


def _endpoint(inst: dict) -> str:
    ssh = inst.get("ssh") or {}
    return f"{ssh['host']}:{ssh['port']}" if ssh.get("host") and ssh.get("port") else "-"


def _time(value: str | None) -> str:
    if not value:
        return "-"
    try:
        return dt.datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value


def _yes(value) -> str:
    return "yes" if value else "no"


# -- waiting ---------------------------------------------------------------------------------

def _status_cells(inst: dict) -> tuple[str, str, str]:
    ready = inst.get("ready") or {}
    return (_state(inst), "ready" if ready.get("ssh") else "not yet",
            "ready" if ready.get("container_engine") else "not yet")


def wait_for(client: ApiClient, ids: list[str], done: Callable[[dict], bool],
             failed: Callable[[dict], bool], timeout: float, what: str,
             show_ready: bool = True) -> dict[str, dict]:
    """Poll IDS until each is DONE or FAILED, showing their progress on stderr (a live table
    on a terminal, a line per change elsewhere). The instances last seen, by id; a
    ClickException when TIMEOUT seconds pass first. SHOW_READY: show SSH and container
    engine readiness too."""
    console = Console(stderr=True)
    started = time.monotonic()
    deadline = started + timeout
    latest: dict[str, dict] = {}
    printed: dict[str, tuple] = {}

    def table() -> Table:
        t = Table(box=None, title=f"waiting for {what} ({time.monotonic() - started:.0f} s)", title_justify="left")
        t.add_column("ID", no_wrap=True, min_width=max(map(len, ids)))
        for column in ("STATE", "SSH", "CONTAINER ENGINE")[:3 if show_ready else 1]:
            t.add_column(column, no_wrap=True)
        for i in ids:
            if i in latest:
                t.add_row(i, *_status_cells(latest[i])[:3 if show_ready else 1])
        return t

    def poll() -> None:
        for i in ids:
            if i in latest and (done(latest[i]) or failed(latest[i])):
                continue
            latest[i] = client.get(f"/v1/instances/{part(i)}")
            if not console.is_terminal and printed.get(i) != _status_cells(latest[i]):
                printed[i] = _status_cells(latest[i])
                state, ssh, engine = printed[i]
                line = f"{i}  {state}" + (f"  ssh: {ssh}  container engine: {engine}" if show_ready else "")
                console.print(line, highlight=False, soft_wrap=True)

    def finished() -> bool:
        return all(done(latest[i]) or failed(latest[i]) for i in ids)

    live = Live(console=console, auto_refresh=False, transient=False) if console.is_terminal else None
    try:
        if live:
            live.start()
        while True:
            poll()
            if live:
                live.update(table(), refresh=True)
            if finished():
                return latest
            left = deadline - time.monotonic()
            if left <= 0:
                waiting = [f"{i} ({_state(latest[i])}" + (f", ssh {_status_cells(latest[i])[1]}" if show_ready else "")
                           + ")" for i in ids if not (done(latest[i]) or failed(latest[i]))]
                raise click.ClickException(
                    f"timed out after {timeout:g} s waiting for {what}: still " + ", ".join(waiting)
                    + "; the service keeps going: see `computed ls`")
            time.sleep(min(POLL_INTERVAL, left))
    except KeyboardInterrupt:
        click.echo(f"\nstopped waiting for {what}; the service keeps going: see `computed ls`", err=True)
        raise SystemExit(130) from None
    finally:
        if live:
            live.stop()


def _ssh_ready(inst: dict) -> bool:
    return _state(inst) == State.RUNNING and bool((inst.get("ready") or {}).get("ssh"))


def _timeout_option(f):
    return click.option("--timeout", type=click.FloatRange(min=0), default=DEFAULT_TIMEOUT, show_default=True,
                        help="Seconds to wait with --wait.")(f)


# -- launch ----------------------------------------------------------------------------------

def _parse_tags(values: tuple[str, ...]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--tag")
        if key in tags:
            raise click.BadParameter(f"the tag {key!r} is given twice", param_hint="--tag")
        tags[key] = value
    return tags


@click.command()
@click.option("--size", required=True, help="Instance size, e.g. t3.micro (an unknown size's error lists the sizes).")
@click.option("--image", help="Image name (default: the service's default image).")
@click.option("--key", "key_name", metavar="NAME", help="Key pair whose public key may log in (computed keypair).")
@click.option("--user-data", type=click.File("rb"), metavar="FILE",
              help="cloud-init user data (#cloud-config, a script, MIME multipart; '-' reads stdin).")
@click.option("--count", type=click.IntRange(1, 20), default=1, show_default=True, help="How many instances.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="A tag; repeatable.")
@click.option("--client-token", help="Idempotency token: retrying with it returns the same instances.")
@click.option("--port", "ports", multiple=True, metavar="[HOST:]GUEST", help=f"Forward a guest port: {PORT_HELP}; "
                                                                             "repeatable.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until every instance answers SSH.")
@_timeout_option
@with_client
def launch(client: ApiClient, size, image, key_name, user_data, count, tags, client_token, ports, wait,
           timeout) -> None:
    """Launch instances; by default wait until they answer SSH, then print each one's id
    and the ssh command that logs in (and the ports it forwards)."""
    body: dict = {"size": size, "count": count, "tags": _parse_tags(tags)}
    if ports:
        body["ports"] = parse_specs(ports, "--port")
    if image:
        body["image"] = image
    if key_name:
        body["key_name"] = key_name
    if client_token:
        body["client_token"] = client_token
    if user_data is not None:
        body["user_data_base64"] = base64.b64encode(user_data.read()).decode()
    result = client.post("/v1/instances", body)
    instances = result["instances"]
    ids = [i["id"] for i in instances]
    first = instances[0]
    click.echo(f"launched {', '.join(ids)} (reservation {result['reservation_id']}, {first['size']}, "
               f"image {first['image']} {first['image_version']})", err=True)
    failures: list[dict] = []
    if wait:
        latest = wait_for(client, ids, _ssh_ready, lambda i: _state(i) in (State.TERMINATED, State.STOPPING, State.STOPPED),
                          timeout, "SSH")
        instances = [latest[i] for i in ids]
        failures = [i for i in instances if not _ssh_ready(i)]
    for inst in instances:
        if inst in failures:
            continue
        command = ssh_command(inst)
        click.echo(f"{inst['id']}  {command}" if command else inst["id"])
        for p in inst.get("ports") or ():
            click.echo(f"{inst['id']}  {describe(p)}")
    if not wait:
        click.echo("not waiting: the instances boot in the background (see `computed ls`)", err=True)
    for inst in failures:
        reason = _reason(inst)
        click.echo(f"Error: {inst['id']} is {_state(inst)}" + (f": {reason}" if reason else ""), err=True)
    if failures:
        raise SystemExit(1)


# -- queries ---------------------------------------------------------------------------------

@click.command("ls")
@click.option("--state", "states", multiple=True, type=click.Choice(NAMES), help="Only in this state; repeatable.")
@click.option("--tag", "tags", multiple=True, metavar="KEY[=VALUE]",
              help="Only with this tag (any value if no =VALUE); repeatable.")
@click.option("--json", "as_json", is_flag=True, help="The instances as the API describes them (a JSON list).")
@with_client
def ls(client: ApiClient, states, tags, as_json) -> None:
    """List instances, newest first."""
    instances: list[dict] = []
    token = None
    while True:
        page = client.get("/v1/instances", state=list(states), tag=list(tags), limit=1000, next_token=token)
        instances.extend(page["instances"])
        token = page.get("next_token")
        if not token:
            break
    if as_json:
        click.echo(json.dumps(instances, indent=2))
        return
    if not instances:
        hint = " match" if states or tags else "; start one with: computed launch --size t3.micro"
        click.echo("no instances" + hint, err=True)
        return
    table = Table(box=None)
    table.add_column("ID", no_wrap=True, min_width=max(len(i["id"]) for i in instances))
    for column in ("STATE", "SIZE", "IMAGE", "SSH", "READY", "LAUNCHED"):
        table.add_column(column, no_wrap=column in ("STATE", "SSH"))
    for i in instances:
        table.add_row(i["id"], _state(i), i["size"], i["image"], _endpoint(i), _ready(i), _time(i.get("launch_time")))
    Console(soft_wrap=True).print(table)


@click.command()
@click.argument("instance_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="The instance as the API describes it.")
@with_client
def show(client: ApiClient, instance_id, as_json) -> None:
    """Show one instance."""
    inst = client.get(f"/v1/instances/{part(instance_id)}")
    if as_json:
        click.echo(json.dumps(inst, indent=2))
        return
    ready = inst.get("ready") or {}
    rows = [
        ("id", inst["id"]),
        ("state", f"{_state(inst)} ({inst['state'].get('code')})"),
        ("state reason", _reason(inst) or "-"),
        ("size", (f"{inst['size']} ({inst['vcpus']} vCPU, {inst['memory_mib']} MiB, {inst['disk_gib']} GiB disk, "
                  f"{inst['price_per_hour']} {inst['currency']}/hour)")),
        ("image", f"{inst['image']} {inst['image_version']}"),
        ("key pair", inst.get("key_name") or "-"),
        ("ssh", ssh_command(inst) or "-"),
        ("host key", ", ".join((inst.get("ssh") or {}).get("host_key_fingerprints") or ()) or "-"),
        ("ports", ", ".join(describe(p) for p in inst.get("ports") or ()) or "-"),
        ("ready", f"ssh: {_yes(ready.get('ssh'))}, container engine: {_yes(ready.get('container_engine'))}"),
        ("launched", _time(inst.get("launch_time"))),
        ("state changed", _time(inst.get("state_changed_at"))),
        ("reservation", f"{inst['reservation_id']} (index {inst['launch_index']})"),
        ("host", inst.get("host") or "-"),
        ("tags", ", ".join(f"{k}={v}" for k, v in sorted((inst.get("tags") or {}).items())) or "-"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


@click.command()
@click.argument("instance_id", metavar="ID")
@with_client
def console(client: ApiClient, instance_id) -> None:
    """Print the instance's serial console output (the last 64 KiB)."""
    output = client.get(f"/v1/instances/{part(instance_id)}/console")["output"]
    if not output:
        click.echo(f"no console output from {instance_id} (yet)", err=True)
        return
    click.echo(output, nl=not output.endswith("\n"))


# -- actions ---------------------------------------------------------------------------------

#: action -> (HTTP method, path suffix, what --wait waits for, done, failed, show readiness)
ACTIONS: dict[str, tuple[str, str, str, Callable[[dict], bool], Callable[[dict], bool], bool]] = {
    "stop": ("POST", "/stop", "the instances to stop",
             lambda i: _state(i) == State.STOPPED, lambda i: _state(i) in (State.SHUTTING_DOWN, State.TERMINATED), False),
    "start": ("POST", "/start", "the instances to run and answer SSH",
              _ssh_ready, lambda i: _state(i) in (State.STOPPING, State.STOPPED, State.SHUTTING_DOWN, State.TERMINATED),
              True),
    "reboot": ("POST", "/reboot", "the instances to answer SSH again",
               _ssh_ready, lambda i: _state(i) in (State.STOPPING, State.STOPPED, State.SHUTTING_DOWN, State.TERMINATED),
              True),
    "terminate": ("DELETE", "", "the instances to terminate",
                  lambda i: _state(i) == State.TERMINATED, lambda i: False, False),
}


def _action_command(name: str, doc: str) -> click.Command:
    method, suffix, what, done, failed, show_ready = ACTIONS[name]

    @click.command(name, help=doc)
    @click.argument("instance_ids", metavar="ID...", nargs=-1, required=True)
    @click.option("--wait", is_flag=True, help=f"Wait for {what}.")
    @_timeout_option
    @with_client
    def command(client: ApiClient, instance_ids, wait, timeout) -> None:
        ok: list[str] = []
        errors = 0
        for instance_id in dict.fromkeys(instance_ids):
            try:
                inst = client.request(method, f"/v1/instances/{part(instance_id)}{suffix}")
            except ApiError as e:
                click.echo(f"Error: {instance_id}: {e.message}", err=True)
                errors += 1
                continue
            ok.append(inst["id"])
            if not wait:
                click.echo(f"{inst['id']}  {_state(inst)}")
        if wait and ok:
            latest = wait_for(client, ok, done, failed, timeout, what, show_ready=show_ready)
            for instance_id in ok:
                inst = latest[instance_id]
                click.echo(f"{instance_id}  {_state(inst)}")
                if not done(inst):
                    reason = _reason(inst)
                    click.echo(f"Error: {instance_id} is {_state(inst)}" + (f": {reason}" if reason else ""), err=True)
                    errors += 1
        if errors:
            raise SystemExit(1)

    return command


stop = _action_command("stop", "Stop instances (a clean power-off, forced after the service's stop timeout).")
start = _action_command("start", "Start stopped instances (--wait: until they answer SSH again).")
reboot = _action_command("reboot", "Reboot running instances (--wait: until they answer SSH again).")
terminate = _action_command("terminate", "Terminate instances: their disks are deleted; they stay listed "
                                         "as terminated for a while.")
