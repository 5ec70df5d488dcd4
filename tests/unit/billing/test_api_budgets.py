"""Monthly budgets (``/v1/budget``, ``computed.billing.budgets``) on an injected clock: events at
80% and 100% once a month each, the stop action, launches and starts refused while over a
stop budget, two checkers on one store, bad input, and who may see whose budget.

The sizes here cost round amounts (``unit``: 1.00 USD an hour; hourly billing bills each
started instance-hour: k hours and a second after it started running, an instance has cost
k + 1), so a spend is exactly 80% or 100% from a known second on.
The service's own periodic check is an hour apart: the tests call ``check`` themselves."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import false as sa_false
from sqlalchemy.exc import IntegrityError

import computed.billing.budgets
from computed.billing.reports import Billing
from computed.billing.budgets import Budgets
from computed.clock import FakeClock
from computed.store.engine import Database
from computed.store.models import BudgetEvent
from computed.service import Service
from tests.unit.api.test_api_auth import sigv4

T0 = dt.datetime(2026, 3, 10, 0, 0, tzinfo=dt.UTC)
SIZES = """currency = "USD"
[[size]]
name = "unit"
vcpus = 1
memory_mib = 128
disk_gib = 1
price_per_hour = "1.00"
"""


@dataclass
class Env:
    app: Flask
    client: FlaskClient
    svc: Service
    clock: FakeClock

    def idle(self) -> None:
        assert self.svc.worker.idle(60), "background work still running after 60 s"

    def check(self) -> list[BudgetEvent]:
        recorded = self.svc.budgets.check()
        self.idle()
        return recorded

    def launch(self, count: int = 1, auth=None) -> list[str]:
        kwargs = {} if auth is None else {"auth": auth}
        response = self.client.post("/v1/instances", json={"size": "unit", "count": count}, **kwargs)
        assert response.status_code == 202, response.get_data(as_text=True)
        self.idle()
        return [i["id"] for i in response.get_json()["instances"]]

    def put(self, amount, action=None, **query):
        body = {"amount": amount} | ({"action": action} if action else {})
        return self.client.put("/v1/budget", json=body, query_string=query)

    def budget(self, **query) -> dict:
        response = self.client.get("/v1/budget", query_string=query)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    def events(self, month: str | None = None) -> list[dict]:
        response = self.client.get("/v1/budget/events", query_string={"month": month} if month else {})
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()["events"]

    def instance(self, instance_id: str, auth=None) -> dict:
        kwargs = {} if auth is None else {"auth": auth}
        return self.client.get(f"/v1/instances/{instance_id}", **kwargs).get_json()

    def account(self, name: str, admin: bool = False) -> tuple[str, tuple[str, str]]:
        """A new account's id and HTTP Basic credentials."""
        creds = self.svc.accounts.create(name, admin=admin)
        return creds.account_id, (creds.access_key_id, creds.secret_access_key)


@pytest.fixture
def env(make_app, tmp_path):
    """env(start=T0) -> Env: an app on a FakeClock whose catalog has the size ``unit``."""

    def make(start: dt.datetime = T0, **changes) -> Env:
        sizes = tmp_path / "sizes.toml"
        sizes.write_text(SIZES)
        clock = FakeClock(start)
        app = make_app(clock=clock, sizes_file=sizes, budget_check_interval=3600, **changes)
        return Env(app, app.test_client(), app.extensions["computed"], clock)

    return make


def thresholds(events: list[dict]) -> list[tuple[int, str]]:
    return [(e["threshold"], e["spend"]) for e in events]


def test_events_at_exactly_80_and_100_percent_once_each(env):
    e = env()
    put = e.put("10.00")
    assert put.status_code == 200, put.get_data(as_text=True)
    body = put.get_json()
    assert (body["amount"], body["currency"], body["action"], body["month"]) == ("10.00", "USD", "notify", "2026-03")
    [iid] = e.launch()  # its first instance-hour: 1.00 now
    assert e.check() == [] and e.events() == []
    e.clock.set(T0 + dt.timedelta(hours=7))  # 7 hours started: 70%
    assert e.check() == []
    assert (e.budget()["spend"], e.budget()["percent"]) == ("7.00", "70.00")
    e.clock.advance(seconds=1)  # the 8th hour starts: 8.00, exactly 80%
    assert [ev.threshold for ev in e.check()] == [80]
    assert e.check() == [] and thresholds(e.events()) == [(80, "8.00")]
    e.clock.set(T0 + dt.timedelta(hours=9))
    assert e.check() == []
    e.clock.advance(seconds=1)  # 10.00: 100%
    assert [ev.threshold for ev in e.check()] == [100]
    e.check()
    events = e.events()
    assert thresholds(events) == [(80, "8.00"), (100, "10.00")]
    assert [ev["at"] for ev in events] == ["2026-03-10T07:00:01+00:00", "2026-03-10T09:00:01+00:00"]
    assert all(ev["instances_stopped"] is None and ev["amount"] == "10.00" for ev in events)
    # notify only: the instance runs on, and launching is allowed
    assert e.instance(iid)["state"]["name"] == "running"
    body = e.budget()
    assert (body["spend"], body["percent"], body["over"], body["launches_refused"]) == ("10.00", "100.00", True, False)
    assert thresholds(body["events"]) == thresholds(events)
    e.launch()


def test_per_second_billing_reaches_80_percent_at_its_second(env):
    e = env(billing_policy="per-second")
    e.put("1")
    e.launch()
    e.clock.set(T0 + dt.timedelta(seconds=2879))  # 2879 s x (1.00 / 3600, to 12 places)
    assert e.check() == []
    assert (e.budget()["spend"], e.budget()["percent"]) == ("0.799722222862", "79.97")
    e.clock.advance(seconds=1)
    assert [ev.threshold for ev in e.check()] == [80]
    assert (e.events()[0]["spend"], e.budget()["percent"]) == ("0.800000000640", "80.00")


def test_a_new_month_starts_again(env):
    e = env(dt.datetime(2026, 3, 31, 22, 0, tzinfo=dt.UTC))
    e.put("2.00")
    e.launch()  # 22:00 and 23:00 are March's hours
    e.clock.set(dt.datetime(2026, 3, 31, 23, 0, 1, tzinfo=dt.UTC))
    assert [ev.threshold for ev in e.check()] == [80, 100]
    e.clock.set(dt.datetime(2026, 4, 1, 0, 0, tzinfo=dt.UTC))  # nothing of April's yet
    assert e.check() == [] and e.budget()["spend"] == "0"
    e.clock.set(dt.datetime(2026, 4, 1, 0, 0, 1, tzinfo=dt.UTC))  # April's first hour: 1.00 of 2.00
    assert e.check() == []
    body = e.budget()
    assert (body["month"], body["spend"], body["percent"], body["events"]) == ("2026-04", "1.00", "50.00", [])
    assert e.events() == []
    assert thresholds(e.events("2026-03")) == [(80, "2.00"), (100, "2.00")]
    e.clock.set(dt.datetime(2026, 4, 1, 1, 0, 1, tzinfo=dt.UTC))
    assert [ev.threshold for ev in e.check()] == [80, 100]
    assert [ev["month"] for ev in e.events()] == ["2026-04", "2026-04"]


def test_stop_stops_only_that_accounts_instances_and_refuses_launch_and_start(env, expect_error):
    e = env()
    _, other = e.account("other")
    _, admin = e.account("ops", admin=True)
    assert e.put("3.00", "stop").get_json()["action"] == "stop"
    mine = e.launch(count=2)  # 2.00 at once
    [theirs] = e.launch(auth=other)
    assert e.check() == []
    e.clock.advance(hours=1, seconds=1)  # 4.00 of 3.00
    recorded = e.check()
    assert [ev.threshold for ev in recorded] == [80, 100]
    [_, hundred] = e.events()
    assert sorted(hundred["instances_stopped"]) == sorted(mine)
    for iid in mine:
        inst = e.instance(iid)
        assert inst["state"]["name"] == "stopped"
        assert inst["state_reason"]["code"] == "Client.BudgetExceeded"
        assert "budget of 3.00 USD" in inst["state_reason"]["message"]
    assert e.instance(theirs, auth=other)["state"]["name"] == "running"
    assert e.budget()["launches_refused"] is True

    message = expect_error(e.client.post("/v1/instances", json={"size": "unit"}), 409, "BudgetExceeded")
    assert "budget of 3.00 USD" in message and "4.00 USD" in message and "2026-04-01 00:00 UTC" in message
    expect_error(e.client.post(f"/v1/instances/{mine[0]}/start"), 409, "BudgetExceeded")
    expect_error(e.client.post(f"/v1/instances/{mine[0]}/start", auth=admin), 409, "BudgetExceeded")
    # the EC2 API takes RunInstances signed (SigV4) only
    body = urlencode({"Action": "RunInstances", "Version": "2016-11-15", "InstanceType": "unit",
                      "MinCount": "1", "MaxCount": "1"}).encode()
    key_id, secret = e.app.config["TEST_AUTH"]
    path, headers = sigv4("POST", "/", key_id, secret, e.svc.settings.region, body=body, service="ec2",
                          headers={"Content-Type": "application/x-www-form-urlencoded"}, at=e.clock.now())
    ec2 = e.client.post(path, data=body, headers=headers, auth=None)
    assert ec2.status_code == 400 and b"<Code>BudgetExceeded</Code>" in ec2.data
    e.launch(auth=other)  # another account launches as before
    assert e.svc.instances.count() == 4  # nothing of the refused launches was left behind

    assert e.put("10.00").get_json()["action"] == "stop"  # the action is kept; raised: allowed again
    assert e.budget()["launches_refused"] is False
    assert e.client.post(f"/v1/instances/{mine[0]}/start").status_code == 202
    e.idle()
    assert e.instance(mine[0])["state"]["name"] == "running"
    assert e.check() == []  # 80% and 100% were recorded this month: not again
    assert len(e.events()) == 2


def test_lowering_the_budget_or_making_it_stop_acts_at_the_next_check(env, expect_error):
    e = env()
    e.put("5.00")  # notify
    [first] = e.launch()
    e.clock.advance(hours=4, seconds=1)  # 5.00
    assert [ev.threshold for ev in e.check()] == [80, 100]
    assert e.events()[1]["instances_stopped"] is None
    assert e.put("5.00", "stop").status_code == 200
    expect_error(e.client.post("/v1/instances", json={"size": "unit"}), 409, "BudgetExceeded")  # at once
    assert e.instance(first)["state"]["name"] == "running"  # until the next check
    assert e.check() == []  # nothing recorded again...
    assert e.events()[1]["instances_stopped"] == [first]  # ...but the action ran, and says so
    assert e.instance(first)["state"]["name"] == "stopped"

    assert e.put("100.00").status_code == 200
    e.client.post(f"/v1/instances/{first}/start")
    [second] = e.launch()
    e.idle()
    e.put("6.00")  # lowered under the spend (5.00 + 1.00 + 1.00): stopped at the next check
    assert e.check() == []
    assert e.events()[1]["instances_stopped"] == [first, second]  # added to the month's event
    assert e.instance(second)["state"]["name"] == "stopped"


def test_removing_the_budget(env, expect_error):
    e = env()
    e.put("1.00", "stop")
    e.launch()
    e.check()
    expect_error(e.client.post("/v1/instances", json={"size": "unit"}), 409, "BudgetExceeded")
    assert e.client.delete("/v1/budget").status_code == 204
    expect_error(e.client.get("/v1/budget"), 404, "InvalidBudget.NotFound")
    expect_error(e.client.delete("/v1/budget"), 404, "InvalidBudget.NotFound")
    assert thresholds(e.events()) == [(80, "1.00"), (100, "1.00")]  # the events stay
    e.launch()
    assert e.check() == []


@pytest.mark.parametrize("body, field, message", [
    ({"amount": "-1"}, "amount", "must not be negative"),
    ({"amount": "-0.5"}, "amount", "must not be negative"),
    ({"amount": "NaN"}, "amount", "finite"),
    ({"amount": "sNaN"}, "amount", "finite"),
    ({"amount": "Infinity"}, "amount", "finite"),
    ({"amount": "1.001"}, "amount", "at most 2 decimal places"),
    ({"amount": "1000000000000"}, "amount", "at most 999999999999.99"),
    ({"amount": "9" * 5000}, "amount", "at most 999999999999.99"),
    ({"amount": "0"}, "amount", "more than 0"),
    ({"amount": "0.00"}, "amount", "more than 0"),
    ({"amount": "1e3"}, "amount", "write digits"),
    ({"amount": " 5"}, "amount", "write digits"),
    ({"amount": "1,000"}, "amount", "not a decimal number"),
    ({"amount": "5\x00"}, "amount", "not a decimal number"),
    ({"amount": "\u0665"}, "amount", "write digits"),  # a five, but not an ASCII digit
    ({"amount": ""}, "amount", "not a decimal number"),
    ({"amount": 12.5}, "amount", "as a string"),
    ({"amount": 12}, "amount", "as a string"),
    ({"amount": None}, "amount", ""),
    ({}, "amount", ""),
    ({"amount": "5", "action": "pause"}, "action", ""),
    ({"amount": "5", "currency": "EUR"}, "currency", "the price catalog's is USD"),
    ({"amount": "5", "currency": "usd"}, "currency", ""),
    ({"amount": "5", "limit": "7"}, "limit", ""),
])
def test_bad_budgets_are_400s_and_leave_nothing(env, expect_error, body, field, message):
    e = env()
    response = e.client.put("/v1/budget", json=body)
    text = expect_error(response, 400, {"InvalidParameterValue", "MissingParameter"})
    assert text.startswith(f"{field}:") and message in text, text
    expect_error(e.client.get("/v1/budget"), 404, "InvalidBudget.NotFound")


def test_bad_queries_are_400s(env, expect_error):
    e = env()
    e.put("5")
    for month in ("2026-13", "2026-1", "26-01", "0999-01", "march", "2026-03-01"):
        assert "month:" in expect_error(e.client.get(f"/v1/budget/events?month={month}"), 400,
                                        "InvalidParameterValue"), month
    for account in ("abc", "12345678901", "1234567890123"):
        expect_error(e.client.get(f"/v1/budget?account={account}"), 400, "InvalidParameterValue")
    expect_error(e.client.get("/v1/budget?other=1"), 400, "InvalidParameterValue")
    expect_error(e.client.put("/v1/budget", data="amount=5"), 415, "UnsupportedMediaType")
    expect_error(e.client.put("/v1/budget", json=["5"]), 400, "InvalidParameterValue")
    expect_error(e.client.put("/v1/budget", data='{"amount": "\\ud800"}', content_type="application/json"), 400,
                 "InvalidParameterValue")
    assert e.budget()["amount"] == "5"  # a whole number is a decimal too


def test_accounts_see_only_their_own_budget(env, app, expect_error):
    e = env()
    me = app.config["TEST_CALLER"].account_id
    other_id, other = e.account("other")
    _, admin = e.account("ops", admin=True)
    assert e.put("5.00").status_code == 200
    assert e.client.put("/v1/budget", json={"amount": "7.50", "action": "stop"}, auth=other).status_code == 200
    assert e.budget()["amount"] == "5.00"  # each its own
    assert e.budget(account=me)["amount"] == "5.00"  # naming oneself is fine

    for method in ("get", "put", "delete"):
        response = getattr(e.client, method)(f"/v1/budget?account={other_id}",
                                             **({"json": {"amount": "1"}} if method == "put" else {}))
        assert "not one" in expect_error(response, 403, "UnauthorizedOperation")
    expect_error(e.client.get(f"/v1/budget/events?account={other_id}"), 403, "UnauthorizedOperation")
    expect_error(e.client.get("/v1/budget?account=999999999999"), 403, "UnauthorizedOperation")  # says nothing
    body = e.client.get(f"/v1/budget?account={other_id}", auth=other).get_json()
    assert (body["amount"], body["action"], body["account_name"]) == ("7.50", "stop", "other")

    # an admin addresses any account
    body = e.client.get(f"/v1/budget?account={other_id}", auth=admin).get_json()
    assert (body["account_id"], body["amount"]) == (other_id, "7.50")
    changed = e.client.put(f"/v1/budget?account={other_id}", json={"amount": "8"}, auth=admin)
    assert changed.get_json()["amount"] == "8" and changed.get_json()["action"] == "stop"
    assert e.client.get(f"/v1/budget/events?account={other_id}", auth=admin).get_json() == {
        "account_id": other_id, "month": "2026-03", "events": []}
    expect_error(e.client.get("/v1/budget?account=999999999999", auth=admin), 404, "InvalidAccountID.NotFound")
    expect_error(e.client.get("/v1/budget", auth=admin), 404, "InvalidBudget.NotFound")  # its own: none
    assert e.client.delete(f"/v1/budget?account={other_id}", auth=admin).status_code == 204
    expect_error(e.client.get("/v1/budget", auth=other), 404, "InvalidBudget.NotFound")
    assert e.budget()["amount"] == "5.00"


def test_two_checkers_on_one_store_record_each_event_once(env):
    e = env()
    e.put("2.00", "stop")
    ids = e.launch(count=2)  # 2.00: 80% and 100% at once
    checkers, dbs = [], []
    for _ in range(2):  # as two service processes: engines of their own on the one store
        db = Database(e.svc.settings.database_url)
        dbs.append(db)
        checkers.append(Budgets(db, Billing(db, e.svc.settings.billing_policy, e.clock), e.svc.instances,
                                e.svc.sizes, e.clock))
    barrier = threading.Barrier(2)

    def run(checker: Budgets) -> list[BudgetEvent]:
        recorded = []
        for _ in range(4):
            barrier.wait(timeout=30)
            recorded += checker.check()
        return recorded

    try:
        with ThreadPoolExecutor(2) as pool:
            results = [f.result(timeout=60) for f in [pool.submit(run, c) for c in checkers]]
    finally:
        for db in dbs:
            db.dispose()
    e.idle()
    assert sorted(ev.threshold for ev in results[0] + results[1]) == [80, 100]
    events = e.events()
    assert [ev["threshold"] for ev in events] == [80, 100]
    assert sorted(events[1]["instances_stopped"]) == sorted(ids)  # each once
    assert {e.instance(i)["state"]["name"] for i in ids} == {"stopped"}


def test_the_store_keeps_one_event_per_account_month_and_threshold(env, app):
    e = env()
    me = app.config["TEST_CALLER"].account_id

    def event():
        return BudgetEvent(account_id=me, month="2026-03", threshold=80, amount="1", currency="USD", spend="1",
                           at=T0)

    with e.svc.db.session() as s:
        s.add(event())
    with pytest.raises(IntegrityError), e.svc.db.session() as s:
        s.add(event())
    assert len(e.events()) == 1


def test_an_event_another_process_recorded_first_is_no_error(env, app, monkeypatch):
    """A checker whose look misses the event another process was inserting meets the unique
    key: not an error, and the instances it stopped are added to that event."""
    e = env()
    e.put("1.00", "stop")
    with e.svc.db.reading() as s:
        budget = s.get(computed.billing.budgets.Budget, app.config["TEST_CALLER"].account_id)
    first = e.svc.budgets._record(budget, "2026-03", 100, Decimal("1.00"), T0, ["i-00000000000000001"])
    assert first is not None
    real_select, looks = computed.billing.budgets.select, []

    def select_missing_once(*args):
        looks.append(args)
        query = real_select(*args)
        return query.where(sa_false()) if len(looks) == 1 else query

    monkeypatch.setattr(computed.billing.budgets, "select", select_missing_once)
    assert e.svc.budgets._record(budget, "2026-03", 100, Decimal("1.50"), T0, ["i-00000000000000002"]) is None
    [event] = e.events()
    assert (event["spend"], event["instances_stopped"]) == ("1.00", ["i-00000000000000001", "i-00000000000000002"])


def test_the_document_describes_the_budget(env):
    spec = env().client.get("/openapi.json").get_json()
    assert {"get", "put", "delete"} <= set(spec["paths"]["/v1/budget"])
    put = spec["components"]["schemas"]["BudgetPut"]
    assert put["required"] == ["amount"] and put["properties"]["action"]["enum"] == ["notify", "stop"]
    assert put["properties"]["amount"]["type"] == "string"
