"""``/v1/hosts`` (admins only) and the placement instances show.

- The store's first host, ``local``, is the service's libvirt_uri: libvirt's test driver,
  16 CPUs and 3 GiB (room under the overcommit ratios 4 and 8: 64 vCPUs, 24 GiB).
- A second host is a test driver node of its own (``node_uri``: its CPUs and memory are
  what its node XML says); it must answer to be added.
- Duplicates are 409, bad input and hosts that cannot be reached 400, unknown hosts 404;
  a host with an instance that is not terminated cannot be removed (409).
- An instance says which host it is on and whether that host answered its last check; a
  page of instances reads its hosts' reachability with one query.
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import event

from computed.errors import ServiceUnavailable

LOCAL = {"vcpus": 16, "memory_mib": 3072}


@pytest.fixture
def admin(app):
    """A test client signed in as an admin account."""
    root = app.extensions["computed"].accounts.create("root", admin=True)
    client = app.test_client()
    opened = client.open
    client.open = lambda *args, **kwargs: opened(*args, **({"auth": (root.access_key_id,
                                                                      root.secret_access_key)} | kwargs))
    return client


def hosts(admin) -> dict[str, dict]:
    response = admin.get("/v1/hosts")
    assert response.status_code == 200, response.get_data(as_text=True)
    return {h["name"]: h for h in response.get_json()["hosts"]}


def add(admin, **body) -> dict:
    response = admin.post("/v1/hosts", json=body)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def placement(client, instance_id: str) -> dict:
    response = client.get(f"/v1/instances/{instance_id}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["placement"]


def test_the_default_host(admin, client, service, expect_error):
    service.hosts.check()  # what the housekeeping does every host_check_interval
    listed = hosts(admin)
    assert list(listed) == ["local"]
    local = listed["local"]
    assert local.pop("created_at") and local.pop("checked_at")
    assert local == {"name": "local", "uri": "test:///default", "address": "127.0.0.1", "enabled": True,
                     "image_mode": "shared", "storage_dir": None, "reachable": True, "last_error": None,
                     "capacity": LOCAL, "room": {"vcpus": 16 * 4, "memory_mib": 3072 * 8},
                     "allocated": {"instances": 0, "vcpus": 0, "memory_mib": 0}, "management_keys": []}
    shown = admin.get("/v1/hosts/local")
    assert shown.status_code == 200
    # the same but for when it was checked last (the housekeeping may check it in between)
    assert shown.get_json() | {"checked_at": None} == hosts(admin)["local"] | {"checked_at": None}
    assert "admin" in expect_error(client.get("/v1/hosts"), 403, "UnauthorizedOperation")


def test_add_hosts(admin, node_uri, service):
    uri = node_uri(cpus=4, memory_mib=2048)
    added = add(admin, name="node-2", uri=uri)
    assert added.pop("created_at") == added.pop("checked_at")  # it answered as it was added
    assert added == {"name": "node-2", "uri": uri, "address": "127.0.0.1", "enabled": True, "image_mode": "shared",
                     "storage_dir": None, "reachable": True, "last_error": None,
                     "capacity": {"vcpus": 4, "memory_mib": 2048}, "room": {"vcpus": 16, "memory_mib": 16384},
                     "allocated": {"instances": 0, "vcpus": 0, "memory_mib": 0}, "management_keys": []}

    copy = add(admin, name="node-3", uri=node_uri(cpus=2, memory_mib=1024, name="three"), address="127.0.2.3",
               image_mode="copy", storage_dir="/srv/computed", enabled=False)
    assert (copy["address"], copy["image_mode"], copy["storage_dir"], copy["enabled"]) == (
        "127.0.2.3", "copy", "/srv/computed", False)
    assert copy["capacity"] == {"vcpus": 2, "memory_mib": 1024}

    listed = hosts(admin)
    assert list(listed) == ["local", "node-2", "node-3"]
    assert listed["node-3"]["enabled"] is False and listed["node-2"]["capacity"] == added["capacity"]
    assert {s.host.name for s in service.hosts.list()} == {"local", "node-2", "node-3"}


def test_duplicates_are_refused(admin, node_uri, expect_error, case):
    uri = node_uri()
    add(admin, name="node-2", uri=uri)
    for label, body in {"same name": {"name": "node-2", "uri": node_uri(name="other")},
                        "the default's name": {"name": "local", "uri": node_uri(name="other")},
                        "same URI": {"name": "node-3", "uri": uri},
                        "the default's URI": {"name": "node-3", "uri": "test:///default"}}.items():
        with case(label):
            message = expect_error(admin.post("/v1/hosts", json=body), 409, "InvalidHost.Duplicate")
            assert "already" in message and (body["name"] in message or body["uri"] in message)
    assert list(hosts(admin)) == ["local", "node-2"]


BAD_BODIES = {
    "no name": ({"uri": "test:///default"}, "name"),
    "no uri": ({"name": "node-2"}, "uri"),
    "upper-case name": ({"name": "Node-2", "uri": "NODE"}, "name"),
    "name with a dot": ({"name": "node.2", "uri": "NODE"}, "name"),
    "name starting with a dash": ({"name": "-node", "uri": "NODE"}, "name"),
    "name too long": ({"name": "n" * 64, "uri": "NODE"}, "name"),
    "name not a string": ({"name": 2, "uri": "NODE"}, "name"),
    "uri with no scheme": ({"name": "node-2", "uri": "node-2.example.org"}, "uri"),
    "uri with a space": ({"name": "node-2", "uri": "qemu+ssh://node 2/system"}, "uri"),
    "uri too long": ({"name": "node-2", "uri": "qemu+ssh://node-2/" + "x" * 240}, "uri"),
    "uri not a string": ({"name": "node-2", "uri": ["qemu:///system"]}, "uri"),
    "uri that does not parse": ({"name": "node-2", "uri": "qemu+ssh://[node-2/system"}, "uri"),
    "uri with a port that is no number": ({"name": "node-2", "uri": "qemu+tcp://node-2:ssh/system"}, "uri"),
    # libvirt would run these, or write where told
    "ext transport": ({"name": "node-2", "uri": "qemu+ext:///system?command=/bin/sh"}, "uri"),
    "ssh's command": ({"name": "node-2", "uri": "qemu+ssh://node-2/system?command=/tmp/x"}, "command"),
    "command in capitals": ({"name": "node-2", "uri": "qemu+ssh://node-2/system?COMMAND=/tmp/x"}, "command"),
    "command percent-encoded": ({"name": "node-2", "uri": "qemu+ssh://node-2/system?%63ommand=/tmp/x"}, "command"),
    "command after ;": ({"name": "node-2", "uri": "qemu+ssh://node-2/system?no_tty=1;command=/tmp/x"}, "command"),
    "netcat": ({"name": "node-2", "uri": "qemu+ssh://node-2/system?keyfile=/k&netcat=sh%20-c%20x"}, "netcat"),
    "known_hosts_verify": ({"name": "node-2", "uri": "qemu+libssh2://node-2/system?known_hosts_verify=auto"},
                           "known_hosts_verify"),
    # libvirt's libssh client crashes the service when a volume stream shares its connection
    "libssh transport": ({"name": "node-2", "uri": "qemu+libssh://node-2/system"}, "libssh"),
    # libvirt's error for a file that is no node description quotes its first line
    "test driver on any file": ({"name": "node-2", "uri": "test:///etc/passwd"}, "test driver"),
    "test driver through libvirtd": ({"name": "node-2", "uri": "test+unix:///etc/passwd"}, "test driver"),
    "unknown image mode": ({"name": "node-2", "uri": "NODE", "image_mode": "local"}, "image_mode"),
    "copy mode without storage_dir": ({"name": "node-2", "uri": "NODE", "image_mode": "copy"}, "storage_dir"),
    "relative storage_dir": ({"name": "node-2", "uri": "NODE", "image_mode": "copy", "storage_dir": "srv"},
                             "storage_dir"),
    "storage_dir in shared mode": ({"name": "node-2", "uri": "NODE", "storage_dir": "/srv"}, "storage_dir"),
    "enabled as a number": ({"name": "node-2", "uri": "NODE", "enabled": 1}, "enabled"),
    "enabled as a string": ({"name": "node-2", "uri": "NODE", "enabled": "true"}, "enabled"),
    "address with a space": ({"name": "node-2", "uri": "NODE", "address": "127.0.2.2 x"}, "address"),
    "unknown field": ({"name": "node-2", "uri": "NODE", "cpus": 4}, "cpus"),
}


def test_bad_input_is_refused(admin, node_uri, expect_error, case):
    uri = node_uri()  # would be added, were the rest right
    for label, (body, named) in BAD_BODIES.items():
        with case(label):
            body = {k: uri if v == "NODE" else v for k, v in body.items()}
            response = admin.post("/v1/hosts", json=body)
            assert named in expect_error(response, 400, {"InvalidParameterValue", "MissingParameter"})
    assert list(hosts(admin)) == ["local"]
    # what passes the checks is added
    assert add(admin, name="node-2", uri=uri + "?no_tty=1", image_mode="copy", storage_dir="/srv")["name"] == "node-2"


def test_a_host_that_cannot_be_reached_is_not_added(admin, expect_error, case):
    for uri in ("test:///nonexistent/node.xml", "qemu+tcp://127.0.0.1:1/system",
                "qemu+unix:///system?socket=/nonexistent/libvirt-sock"):
        with case(uri):
            message = expect_error(admin.post("/v1/hosts", json={"name": "node-2", "uri": uri}), 400,
                                   "InvalidParameterValue")
            assert message.startswith("the host node-2 cannot be added: ") and uri in message
    assert list(hosts(admin)) == ["local"]


def test_disable_and_enable(admin, client, node_uri, launch, wait, expect_error):
    add(admin, name="node-2", uri=node_uri())
    disabled = admin.post("/v1/hosts/local/disable")
    assert disabled.status_code == 200 and disabled.get_json()["enabled"] is False
    assert admin.post("/v1/hosts/local/disable").get_json()["enabled"] is False  # again: no error
    assert hosts(admin)["local"]["enabled"] is False

    # a disabled host takes no new instance
    on_node = launch()["instances"][0]
    assert on_node["placement"]["host"] == "node-2"
    assert admin.post("/v1/hosts/node-2/disable").get_json()["enabled"] is False
    refused = client.post("/v1/instances", json={"size": "t3.micro"})
    message = expect_error(refused, 503, "InsufficientInstanceCapacity")
    assert "local: disabled" in message and "node-2: disabled" in message

    # ... while what runs there goes on
    wait()
    assert client.get(f"/v1/instances/{on_node['id']}").get_json()["state"]["name"] == "running"
    assert client.post(f"/v1/instances/{on_node['id']}/stop").status_code == 202
    wait()
    assert client.post(f"/v1/instances/{on_node['id']}/start").status_code == 202
    wait()
    assert client.get(f"/v1/instances/{on_node['id']}").get_json()["state"]["name"] == "running"

    enabled = admin.post("/v1/hosts/local/enable")
    assert enabled.status_code == 200 and enabled.get_json()["enabled"] is True
    assert launch()["instances"][0]["placement"]["host"] == "local"
    assert {name: h["enabled"] for name, h in hosts(admin).items()} == {"local": True, "node-2": False}


def test_remove_a_host(admin, client, node_uri, launch, wait, expect_error):
    add(admin, name="node-2", uri=node_uri())
    admin.post("/v1/hosts/local/disable")
    iid = launch()["instances"][0]["id"]
    wait()
    assert hosts(admin)["node-2"]["allocated"] == {"instances": 1, "vcpus": 2, "memory_mib": 1024}

    assert "terminate" in expect_error(admin.delete("/v1/hosts/node-2"), 409, "InvalidHost.InUse")
    assert client.post(f"/v1/instances/{iid}/stop").status_code == 202
    wait()
    assert client.get(f"/v1/instances/{iid}").get_json()["state"]["name"] == "stopped"
    expect_error(admin.delete("/v1/hosts/node-2"), 409, "InvalidHost.InUse")  # a stopped one keeps its place

    assert client.delete(f"/v1/instances/{iid}").status_code == 202
    wait()
    assert hosts(admin)["node-2"]["allocated"] == {"instances": 0, "vcpus": 0, "memory_mib": 0}
    removed = admin.delete("/v1/hosts/node-2")
    assert removed.status_code == 204 and removed.get_data() == b""
    assert list(hosts(admin)) == ["local"]
    expect_error(admin.get("/v1/hosts/node-2"), 404, "InvalidHostID.NotFound")
    # the terminated instance is still listed, on no host now
    terminated = client.get(f"/v1/instances/{iid}").get_json()
    assert terminated["state"]["name"] == "terminated"
    assert terminated["placement"] == {"host": None, "availability_zone": "computed-1a", "host_reachable": False}


def test_unknown_hosts_are_not_found(admin, expect_error, case):
    for name in ("node-9", "Not_A_Host", "n" * 64, "%00", "local%0A"):
        for method, suffix in (("GET", ""), ("DELETE", ""), ("POST", "/disable"), ("POST", "/enable")):
            with case(f"{method} {name}{suffix}"):
                response = admin.open(f"/v1/hosts/{name}{suffix}", method=method)
                assert "does not exist" in expect_error(response, 404, "InvalidHostID.NotFound")
    assert list(hosts(admin)) == ["local"]


def test_instances_show_their_placement(admin, client, node_uri, launch, wait, service, monkeypatch):
    add(admin, name="node-2", uri=node_uri())
    service.hosts.check()
    here = launch()["instances"][0]
    assert here["placement"] == {"host": "local", "availability_zone": "computed-1a", "host_reachable": True}
    assert here["host"] == "local"  # a non-admin sees the host's name, an admin its libvirt URI (issue 17)
    assert admin.get(f"/v1/instances/{here['id']}").get_json()["host"] == "test:///default"
    admin.post("/v1/hosts/local/disable")
    there = launch(count=2)["instances"]
    assert [i["placement"]["host"] for i in there] == ["node-2", "node-2"]
    wait()

    # node-2 stops answering: its instances are shown on an unreachable host, not lost
    def unreachable():
        raise ServiceUnavailable("the libvirt host cannot be reached: gone")

    monkeypatch.setattr(service.hosts.driver("node-2"), "capacity", unreachable)
    assert service.hosts.check()["node-2"]
    node = hosts(admin)["node-2"]
    assert node["reachable"] is False and "gone" in node["last_error"]
    listed = {i["id"]: i for i in client.get("/v1/instances").get_json()["instances"]}
    assert {i: (v["placement"]["host"], v["placement"]["host_reachable"], v["state"]["name"])
            for i, v in listed.items()} == {here["id"]: ("local", True, "running"),
                                            there[0]["id"]: ("node-2", False, "running"),
                                            there[1]["id"]: ("node-2", False, "running")}
    assert placement(client, there[0]["id"])["host_reachable"] is False
    assert placement(client, here["id"])["host_reachable"] is True

    monkeypatch.undo()
    service.hosts.check()
    assert placement(client, there[1]["id"]) == {"host": "node-2", "availability_zone": "computed-1a",
                                                 "host_reachable": True}


def test_a_page_of_instances_reads_its_hosts_once(admin, client, node_uri, launch, wait, service):
    add(admin, name="node-2", uri=node_uri())
    launch(count=2)
    admin.post("/v1/hosts/local/disable")
    launch(count=2)
    wait()
    statements: list[str] = []
    me = threading.get_ident()  # the housekeeping thread reads the hosts too, meanwhile

    def seen(conn, cursor, statement, *args):
        if threading.get_ident() == me:
            statements.append(statement)

    event.listen(service.db.engine, "before_cursor_execute", seen)
    try:
        listed = client.get("/v1/instances").get_json()["instances"]
    finally:
        event.remove(service.db.engine, "before_cursor_execute", seen)
    assert sorted(i["placement"]["host"] for i in listed) == ["local", "local", "node-2", "node-2"]
    assert len([s for s in statements if "hosts" in s.lower()]) == 1, statements
