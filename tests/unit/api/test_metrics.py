"""``/metrics``: Prometheus's text format, read back with prometheus_client's own parser.

- Who may scrape: an admin (401 without credentials, 403 for another account), anyone
  with the ``[metrics] public`` setting.
- What happens, counted: launches by size and image, failed launches by their reason's
  code, the launch-to-running and launch-to-SSH histograms, libvirt's errors by host and
  operation, API requests by endpoint name (never the path), method and status.
- What the store holds, read at each scrape: instances by state, each host's capacity,
  room and allocation, and the cost accrued, which a FakeClock makes grow.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import libvirt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from computed.clock import FakeClock
from computed.billing.metering import per_second_rate
from computed.settings import Settings, SettingsError
from computed.virt.driver import Capabilities
from computed.virt.errors import LaunchError

T0 = dt.datetime(2026, 3, 1, 10, 30, tzinfo=dt.UTC)
STATES = {"pending", "running", "stopping", "stopped", "shutting-down", "terminated"}
MICRO = {"size": "t3.micro", "image": "debian-12-podman"}
MICRO_PRICE = Decimal("0.0104")  # per hour
LOCAL = "local"


class Scrape:
    """One scrape: its samples, by name and labels."""

    def __init__(self, text: str):
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = [s for f in self.families.values() for s in f.samples]

    def value(self, name: str, **labels) -> float:
        """The sample NAME with exactly LABELS, 0 if there is none (a counter no one touched)."""
        found = [s.value for s in self.samples if s.name == name and s.labels == labels]
        assert len(found) <= 1, (name, labels, found)
        return found[0] if found else 0.0

    def labels(self, name: str) -> list[dict]:
        return [s.labels for s in self.samples if s.name == name]


def admin_of(app) -> tuple[str, str]:
    """The credentials of a new admin account in APP's store."""
    creds = app.extensions["computed"].accounts.create(f"prometheus-{uuid.uuid4().hex[:8]}", admin=True)
    return creds.access_key_id, creds.secret_access_key


def scraper(app):
    """scrape() -> Scrape of APP's GET /metrics, as an admin."""
    auth, client = admin_of(app), app.test_client()

    def scrape() -> Scrape:
        response = client.get("/metrics", auth=auth)
        assert response.status_code == 200, response.get_data(as_text=True)
        return Scrape(response.get_data(as_text=True))

    return scrape


@pytest.fixture
def admin_auth(app):
    return admin_of(app)


@pytest.fixture
def scrape(app):
    return scraper(app)


def launch(app, count: int = 1, **body) -> list[str]:
    """Launch COUNT instances through APP and wait for its worker to finish with them."""
    response = app.test_client().post("/v1/instances", json={"size": "t3.micro", "count": count, **body})
    assert response.status_code == 202, response.get_data(as_text=True)
    idle(app)
    return [i["id"] for i in response.get_json()["instances"]]


def idle(app) -> None:
    assert app.extensions["computed"].worker.idle(60), "background work still running after 60 s"


# -- access --------------------------------------------------------------------------------

def test_an_admin_may_scrape_and_no_one_else(client, admin_auth, expect_error):
    expect_error(client.get("/metrics", auth=None), 401, "AuthFailure")
    expect_error(client.get("/metrics", auth=("AKCDNOTAKEY", "wrong")), 401, "AuthFailure")
    assert "admin" in expect_error(client.get("/metrics"), 403, "UnauthorizedOperation")  # the test account
    response = client.get("/metrics", auth=admin_auth)
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    assert "computed_instances" in Scrape(response.get_data(as_text=True)).families


def test_the_public_setting_opens_it_to_anyone(make_app):
    client = make_app(metrics_public=True).test_client()
    response = client.get("/metrics", auth=None)
    assert response.status_code == 200
    assert "computed_build_info" in Scrape(response.get_data(as_text=True)).families
    assert client.get("/metrics").status_code == 200  # and to any account
    assert client.get("/v1/instances", auth=None).status_code == 401  # the rest is not public


def test_the_public_setting(tmp_path):
    def load(environ=None, config=None) -> Settings:
        if config is not None:
            (tmp_path / "computed.toml").write_text(config)
        return Settings.load({"COMPUTED_VAR_DIR": str(tmp_path), **(environ or {})})

    assert load().metrics_public is False
    for word, expected in (("true", True), ("1", True), ("yes", True), ("false", False), ("0", False)):
        assert load({"COMPUTED_METRICS_PUBLIC": word}).metrics_public is expected, word
    assert load(config="[metrics]\npublic = true\n").metrics_public is True
    assert load(config="[metrics]\npublic = false\n").metrics_public is False
    with pytest.raises(SettingsError, match="COMPUTED_METRICS_PUBLIC"):
        load({"COMPUTED_METRICS_PUBLIC": "maybe"})
    with pytest.raises(SettingsError, match=r"\[metrics\] public"):
        load(config='[metrics]\npublic = "sometimes"\n')
    with pytest.raises(SettingsError, match=r"\[api\] port"):  # other settings still take no boolean
        load(config="[api]\nport = true\n")


def test_each_service_has_its_own_registry(make_app, app, scrape):
    other = make_app()  # another service (on the same store)
    launch(app)
    assert scrape().value("computed_launches_total", **MICRO) == 1
    elsewhere = scraper(other)()
    assert elsewhere.value("computed_launches_total", **MICRO) == 0  # what happened in this process
    assert elsewhere.value("computed_instances", state="running") == 1  # what the store says


# -- launches ------------------------------------------------------------------------------

def test_launches_are_counted_and_timed(app, client, scrape):
    before = scrape()
    assert before.value("computed_launches_total", **MICRO) == 0
    assert {labels["state"] for labels in before.labels("computed_instances")} == STATES
    assert all(before.value("computed_instances", state=state) == 0 for state in STATES)

    ids = launch(app, count=2)
    after = scrape()
    assert after.value("computed_launches_total", **MICRO) == 2
    assert after.value("computed_launch_to_running_seconds_count") == 2
    assert after.value("computed_launch_to_running_seconds_bucket", le="+Inf") == 2
    assert after.value("computed_launch_to_running_seconds_bucket", le="60.0") == 2  # the test driver: at once
    assert after.value("computed_launch_to_ssh_ready_seconds_count") == 0  # its guests never answer SSH
    assert after.labels("computed_launch_failures_total") == []
    assert after.value("computed_instances", state="running") == 2
    assert sum(after.value("computed_instances", state=state) for state in STATES) == 2

    assert client.post(f"/v1/instances/{ids[0]}/stop").status_code == 202
    idle(app)
    assert client.delete(f"/v1/instances/{ids[1]}").status_code == 202
    idle(app)
    later = scrape()
    assert {state: later.value("computed_instances", state=state) for state in STATES} == {
        "pending": 0, "running": 0, "stopping": 0, "stopped": 1, "shutting-down": 0, "terminated": 1}
    assert later.value("computed_launches_total", **MICRO) == 2  # a stop or terminate is no launch


def test_failed_launches_are_counted_by_code(app, client, scrape, monkeypatch, service):
    def refused(self, xml, *args):
        raise libvirt.libvirtError("define refused by the test")

    with monkeypatch.context() as m:  # libvirt itself refuses: counted as the driver's define error too
        m.setattr(libvirt.virConnect, "defineXML", refused)
        (failed,) = launch(app)
    assert client.get(f"/v1/instances/{failed}").get_json()["state_reason"]["code"] == "Server.InternalError"

    def gone(self, inst):
        raise LaunchError("the image is gone, says the test", "Client.InvalidImage")

    with monkeypatch.context() as m:
        m.setattr(type(service.provisioner), "image_of", gone)
        launch(app, count=2)
    launch(app)  # and one that works

    got = scrape()
    assert got.value("computed_launches_total", **MICRO) == 4
    assert got.value("computed_launch_failures_total", code="Server.InternalError") == 1
    assert got.value("computed_launch_failures_total", code="Client.InvalidImage") == 2
    assert got.value("computed_launch_to_running_seconds_count") == 1
    assert got.value("computed_libvirt_errors_total", host=LOCAL, operation="define") == 1
    assert got.value("computed_instances", state="terminated") == 3
    assert got.value("computed_instances", state="running") == 1


def test_launch_to_ssh_ready(monkeypatch, make_app):
    """The test driver's guests never answer SSH: here the provisioner says one did, 42
    seconds (of the FakeClock) after its launch."""
    clock = FakeClock(T0)
    app = make_app(clock=clock)
    svc = app.extensions["computed"]

    class Session:
        def close(self):
            pass

    def logged_in(inst, deadline, still_wanted, not_boot=None):
        clock.advance(seconds=42)
        return Session()

    real_guests = Capabilities(boots_guests=True, port_forwards=True)
    monkeypatch.setattr(svc.provisioner, "capabilities", lambda inst: real_guests)
    monkeypatch.setattr(svc.provisioner, "wait_for_ssh", logged_in)
    monkeypatch.setattr(svc.provisioner, "check_engine", lambda inst, session: (True, ""))
    (iid,) = launch(app)
    assert app.test_client().get(f"/v1/instances/{iid}").get_json()["ready"]["ssh"] is True
    got = scraper(app)()
    assert got.value("computed_launch_to_ssh_ready_seconds_count") == 1
    assert got.value("computed_launch_to_ssh_ready_seconds_sum") == 42
    assert got.value("computed_launch_to_ssh_ready_seconds_bucket", le="30.0") == 0
    assert got.value("computed_launch_to_ssh_ready_seconds_bucket", le="45.0") == 1
    assert got.value("computed_launch_to_running_seconds_sum") == 0  # running before the clock moved


# -- requests ------------------------------------------------------------------------------

def test_requests_are_timed_by_endpoint_never_by_path(client, scrape, admin_auth):
    missing = "i-0123456789abcdef0"
    assert client.get(f"/v1/instances/{missing}").status_code == 404
    assert client.get(f"/v1/instances/{missing}").status_code == 404
    assert client.post("/v1/keypairs", json={"name": "k1"}).status_code == 201
    assert client.get("/v1/instances", auth=None).status_code == 401
    assert client.get("/v1/no-such-thing").status_code == 404
    assert client.open("/v1/instances", method="BREW").status_code == 405
    assert client.get("/health").status_code == 200
    for _ in range(3):
        scrape()

    got = scrape()
    count = "computed_api_request_duration_seconds_count"
    seen = got.labels(count)
    assert got.value(count, endpoint="instances.InstanceResource", method="GET", status="404") == 2
    assert got.value(count, endpoint="keypairs.KeyPairs", method="POST", status="201") == 1
    assert got.value(count, endpoint="instances.Instances", method="GET", status="401") == 1
    assert got.value(count, endpoint="unmatched", method="GET", status="404") == 1
    assert got.value(count, endpoint="unmatched", method="OTHER", status="405") == 1  # no label of the caller's
    assert got.value(count, endpoint="health", method="GET", status="200") == 1
    assert not [labels for labels in seen if labels["endpoint"].startswith("metrics")]  # scrapes are not timed
    assert not [labels for labels in seen if "/" in labels["endpoint"] or missing in str(labels)]
    one = {"endpoint": "instances.InstanceResource", "method": "GET", "status": "404"}
    assert got.value("computed_api_request_duration_seconds_bucket", **one, le="+Inf") == 2
    assert got.value("computed_api_request_duration_seconds_sum", **one) > 0


def test_ec2_requests_are_timed(client, scrape):
    assert client.post("/", data={"Action": "DescribeInstances", "Version": "2016-11-15"}).status_code == 200
    got = scrape()
    assert got.value("computed_api_request_duration_seconds_count", endpoint="ec2.query_api", method="POST",
                     status="200") == 1


# -- hosts ---------------------------------------------------------------------------------

def host_values(got: Scrape, host: str) -> dict:
    mib = 1024 * 1024
    return {
        "capacity": {"vcpus": got.value("computed_host_vcpus", host=host),
                     "memory_mib": got.value("computed_host_memory_bytes", host=host) / mib},
        "room": {"vcpus": got.value("computed_host_vcpus_room", host=host),
                 "memory_mib": got.value("computed_host_memory_room_bytes", host=host) / mib},
        "allocated": {"instances": got.value("computed_host_instances", host=host),
                      "vcpus": got.value("computed_host_vcpus_allocated", host=host),
                      "memory_mib": got.value("computed_host_memory_allocated_bytes", host=host) / mib},
        "enabled": bool(got.value("computed_host_enabled", host=host)),
        "reachable": bool(got.value("computed_host_reachable", host=host)),
    }


def test_host_gauges_are_the_hosts_numbers(app, client, scrape, service, admin_auth, node_uri):
    added = client.post("/v1/hosts", json={"name": "node-2", "uri": node_uri(cpus=4, memory_mib=2048)},
                        auth=admin_auth)
    assert added.status_code == 201, added.get_data(as_text=True)
    service.hosts.check()
    launch(app, count=3)
    assert client.post("/v1/hosts/node-2/disable", auth=admin_auth).status_code == 200

    hosts = {h["name"]: h for h in client.get("/v1/hosts", auth=admin_auth).get_json()["hosts"]}
    got = scrape()
    assert {labels["host"] for labels in got.labels("computed_host_vcpus")} == {"local", "node-2"}
    for name, host in hosts.items():
        expected = {key: host[key] for key in ("capacity", "room", "allocated", "enabled", "reachable")}
        assert host_values(got, name) == expected, name
    assert hosts["local"]["capacity"] == {"vcpus": 16, "memory_mib": 3072}
    assert hosts["node-2"]["capacity"] == {"vcpus": 4, "memory_mib": 2048}
    assert sum(h["allocated"]["instances"] for h in hosts.values()) == 3
    assert host_values(got, "node-2")["enabled"] is False


def test_libvirt_errors_of_a_host_that_cannot_be_reached(client, scrape, service, admin_auth, node_uri, tmp_path):
    uri = node_uri(name="gone")
    assert client.post("/v1/hosts", json={"name": "node-2", "uri": uri}, auth=admin_auth).status_code == 201
    service.hosts.driver("node-2").close()  # whatever the housekeeping opened meanwhile
    (tmp_path / "gone.xml").unlink()  # the test driver reads its node at each connection

    errors = service.hosts.check()
    assert errors["node-2"] and errors[LOCAL] is None
    got = scrape()
    assert got.value("computed_libvirt_errors_total", host="node-2", operation="open") >= 1
    assert got.value("computed_host_reachable", host="node-2") == 0
    assert got.value("computed_host_reachable", host=LOCAL) == 1
    assert not [labels for labels in got.labels("computed_libvirt_errors_total") if labels["host"] == LOCAL]


# -- cost ------------------------------------------------------------------------------------

@pytest.mark.parametrize("policy", ["hourly", "per-second"])
def test_cost_accrued_grows_with_the_clock(make_app, policy):
    clock = FakeClock(T0)
    app = make_app(clock=clock, billing_policy=policy)
    client, scrape, auth = app.test_client(), scraper(app), admin_of(app)
    hourly = policy == "hourly"

    def cost() -> float:
        return scrape().value("computed_cost_accrued_total", currency="USD")

    def billed(seconds: int) -> Decimal:
        """What a t3.micro running SECONDS costs."""
        return -(-seconds // 3600) * MICRO_PRICE if hourly else max(seconds, 60) * per_second_rate(MICRO_PRICE)

    assert cost() == 0  # there from the start: the catalog's currency
    (first,) = launch(app)
    assert cost() == (float(MICRO_PRICE) if hourly else 0)  # an hourly instance-hour is billed as it starts
    clock.advance(hours=1, seconds=1)
    assert cost() == pytest.approx(float(billed(3601)))
    assert client.delete(f"/v1/instances/{first}").status_code == 202
    idle(app)
    ended = cost()
    assert ended == pytest.approx(float(billed(3601)))
    clock.advance(hours=3)
    assert cost() == ended  # a terminated instance costs no more
    launch(app, size="t3.small")
    clock.advance(minutes=30)
    assert cost() > ended
    # what a billing report over all of it totals
    report = client.get("/v1/billing/report?start=2026-03-01T00:00:00Z&end=2026-03-02T00:00:00Z", auth=auth)
    assert cost() == pytest.approx(float(report.get_json()["total"][0]["cost"]))


def test_cost_accrued_across_a_settled_hour(make_app):
    """Per-second: a 25-second run from 10:59:50 is billed its 60-second minimum once it
    ended, in the hour it started, which the metric keeps once that hour has settled."""
    clock = FakeClock(dt.datetime(2026, 3, 1, 10, 59, 50, tzinfo=dt.UTC))
    app = make_app(clock=clock, billing_policy="per-second")
    client, scrape, auth = app.test_client(), scraper(app), admin_of(app)
    rate = per_second_rate(MICRO_PRICE)

    def cost() -> float:
        return scrape().value("computed_cost_accrued_total", currency="USD")

    (iid,) = launch(app)
    clock.advance(seconds=20)
    assert cost() == pytest.approx(float(20 * rate))
    clock.advance(seconds=5)
    assert client.post(f"/v1/instances/{iid}/stop").status_code == 202
    idle(app)
    assert cost() == pytest.approx(float(60 * rate))
    clock.advance(minutes=10)  # 11:10:15: the 10:00 hour has settled, its top-up with it
    assert cost() == pytest.approx(float(60 * rate))
    assert client.post(f"/v1/instances/{iid}/start").status_code == 202
    idle(app)
    clock.advance(hours=2, seconds=7)
    report = client.get("/v1/billing/report?start=2026-03-01T00:00:00Z&end=2026-03-02T00:00:00Z", auth=auth)
    assert cost() == pytest.approx(float(report.get_json()["total"][0]["cost"]))
    assert cost() == pytest.approx(float((60 + 2 * 3600 + 7) * rate))


def test_cost_accrued_rebills_only_what_may_have_changed(make_app, monkeypatch):
    """A scrape bills every run once; later ones only the time since the last settled hour,
    and only the instances that may have run since (not terminated, or terminated since):
    a long history is not read at every scrape."""
    clock = FakeClock(T0)  # 10:30
    app = make_app(clock=clock)
    client, scrape, svc = app.test_client(), scraper(app), app.extensions["computed"]
    done = launch(app, count=3)
    clock.advance(hours=1)  # 11:30
    for iid in done:
        assert client.delete(f"/v1/instances/{iid}").status_code == 202
    idle(app)
    (live,) = launch(app)

    asked = []  # (start, instance ids or None for all) of each run query a scrape makes
    runs = svc.billing.runs

    def spying(start=None, end=None, instance_ids=None, **kwargs):
        when = "ever" if start is None or start.year == 1970 else start.strftime("%H:%M")
        asked.append((when, None if instance_ids is None else set(instance_ids)))
        return runs(start, end, instance_ids=instance_ids, **kwargs)

    monkeypatch.setattr(svc.billing, "runs", spying)

    def cost() -> float:
        asked.clear()  # the API's own views ask too
        return scrape().value("computed_cost_accrued_total", currency="USD")

    first = cost()
    assert first == pytest.approx(float(4 * MICRO_PRICE))  # three ran an hour, one just started
    everyone = {live, *done}
    assert asked == [("ever", None), ("11:00", everyone)]  # every run, once; then since the settled hour
    assert cost() == first
    assert asked == [("11:00", everyone)]
    clock.advance(hours=2)  # 13:30: 11:00-13:00 is settled; the live one has run 2 hours
    assert cost() == pytest.approx(float(5 * MICRO_PRICE))
    assert asked == [("11:00", everyone), ("13:00", {live})]
    assert cost() == pytest.approx(float(5 * MICRO_PRICE))
    assert asked == [("13:00", {live})]
    assert client.delete(f"/v1/instances/{live}").status_code == 202
    idle(app)
    clock.advance(hours=3)
    assert cost() == pytest.approx(float(5 * MICRO_PRICE))
    assert asked == [("13:00", {live})]  # nothing ran since 16:00: no run read for it
