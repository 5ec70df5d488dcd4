"""The web console in a real browser (headless Chromium, Playwright), against the real app
on ``test:///default``: log in through the form, launch an instance through the form (with
tags and a forwarded port), watch it turn ``running`` without a reload, read its console
output, add and remove a port, terminate it through the confirmation dialog, see it
``terminated``; the billing section's chart, table and CSV; the budget; screenshots at
desktop and phone width, where nothing scrolls the page sideways."""

from __future__ import annotations

import csv
import io
import re
import struct
from pathlib import Path

import pytest
import requests
from PIL import Image

try:
    from playwright.sync_api import Page, expect
except ImportError:  # the browser fixture skips the tests (fails them in CI)
    Page = expect = None

from tests.browser.conftest import PHONE

pytestmark = pytest.mark.browser

HOSTILE = '<img src=x onerror="window.__pwned=1">'


def log_in(page: Page, creds) -> None:
    expect(page.locator("#login")).to_be_visible()
    page.fill("#login-key", creds.access_key_id)
    page.fill("#login-secret", creds.secret_access_key)
    page.click("#login-submit")
    expect(page.locator("#who")).to_have_text("alice")
    expect(page.locator("#login")).to_be_hidden()


def screenshot(page: Page, path: Path, width: int) -> Path:
    page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    shot_width, shot_height = struct.unpack(">II", data[16:24])
    assert shot_width == width and shot_height >= 400, (shot_width, shot_height)
    with Image.open(path) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is None or len(colours) > 20, f"{path.name}: an almost blank page"
    assert len(data) > 10_000, f"{path.name}: {len(data)} bytes"
    return path


def no_sideways_scroll(page: Page) -> None:
    overflow = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth,"
                             " document.body.scrollWidth]")
    assert overflow[0] <= overflow[1] and overflow[2] <= overflow[1], f"page wider than the screen: {overflow}"


def test_launch_watch_and_terminate_an_instance(open_console, console_server, tmp_path):
    page = open_console()
    log_in(page, console_server.user)
    expect(page.locator("#launch-button")).to_be_visible()
    page.evaluate("() => { window.__sameDocument = true; }")  # gone if anything reloads the page

    # launch through the form: size, image, key pair, tags (one hostile), a forwarded port, user data
    page.click("#launch-button")
    expect(page.locator("#launch-form")).to_be_visible()
    expect(page.locator("#launch-size option[value='t3.micro']")).to_have_count(1)
    expect(page.locator("#launch-key option[value='laptop']")).to_have_count(1)
    page.select_option("#launch-size", "t3.micro")
    page.select_option("#launch-image", "debian-12-podman")
    page.select_option("#launch-key", "laptop")
    page.fill("#launch-name", f"web {HOSTILE}")
    page.click("#add-tag")
    page.locator(".tag-row .tag-key").last.fill("env")
    page.locator(".tag-row .tag-value").last.fill("test")
    page.click("#add-port")
    page.fill(".port-row .port-guest", "80")
    page.fill("#launch-user-data", "#cloud-config\nruncmd:\n  - echo hello\n")
    page.click("#launch-submit")

    notice = page.locator("#notice-text")
    expect(notice).to_contain_text("Launched i-")
    iid = re.search(r"i-[0-9a-f]{17}", notice.text_content()).group(0)
    assert page.evaluate("() => location.hash") == "#/instances"
    row = page.locator(f"#instances tr[data-id='{iid}']")
    expect(row.locator(".state")).to_have_text("running", timeout=20_000)  # the poll, no reload
    expect(row.locator("td[data-label='Name']")).to_have_text(f"web {HOSTILE}")  # as text, not HTML
    expect(row.locator("td[data-label='Ports']")).to_contain_text("→ 80/tcp")
    expect(row.locator("td[data-label='SSH'] code")).to_contain_text("ssh -i laptop.pem -p ")
    expect(row.locator("td[data-label='Cost so far']")).to_contain_text("USD")
    expect(row.locator("td[data-label='Uptime']")).to_have_text(re.compile(r"^\d+s$|^\d+m \d\ds$"))
    screenshot(page, tmp_path / "desktop-instances.png", 1280)

    # the detail page: console output (hostile too), ports added and removed
    console_log = console_server.settings.instances_dir / iid / "console.log"
    console_log.write_text(f"Debian GNU/Linux 12 {iid} ttyS0\n{HOSTILE}\n{iid} login: ")
    row.locator("a").first.click()
    expect(page.locator("#main h1")).to_have_text(iid)
    expect(page.locator("[data-field='tags']")).to_have_text(f"Name=web {HOSTILE}, env=test")
    expect(page.locator("#ports tbody tr")).to_have_count(1)
    page.click("#console-button")
    output = page.locator("#console-output")
    expect(output).to_be_visible()
    expect(output).to_contain_text(f"{HOSTILE}\n{iid} login:")
    assert page.locator("#console-output img").count() == 0

    page.fill("#port-guest", "8080")
    page.click("#port-form button[type=submit]")
    expect(page.locator("#ports tbody tr")).to_have_count(2)
    expect(notice).to_contain_text("Forwarding 127.0.0.1:")
    added = page.locator("#ports tbody tr").filter(
        has=page.locator("td[data-label='Guest port']", has_text=re.compile(r"^8080$")))
    added.locator("button").click()
    expect(page.locator("#confirm")).to_be_visible()
    page.click("#confirm-ok")
    expect(page.locator("#ports tbody tr")).to_have_count(1)
    screenshot(page, tmp_path / "desktop-instance.png", 1280)

    # terminate: the dialog asks first; Cancel does nothing
    page.click("#action-terminate")
    dialog = page.locator("#confirm")
    expect(dialog).to_be_visible()
    expect(page.locator("#confirm-title")).to_have_text(f"Terminate {iid}?")
    page.click("#confirm-cancel")
    expect(dialog).to_be_hidden()
    expect(page.locator("#detail-state")).to_have_text("running")
    page.click("#action-terminate")
    page.click("#confirm-ok")
    expect(page.locator("#detail-state")).to_have_text("terminated", timeout=20_000)
    expect(page.locator("#action-terminate")).to_be_disabled()
    page.click("#nav a[data-section='instances']")
    expect(page.locator(f"#instances tr[data-id='{iid}'] .state")).to_have_text("terminated")

    # billing: chart, table, CSV
    page.click("#nav a[data-section='billing']")
    page.click("text=7 days")
    chart = page.locator("#billing-chart")
    expect(chart).to_be_visible()
    page.wait_for_function("() => document.querySelector('#billing-chart').naturalWidth > 100")
    expect(page.locator("#billing-table tbody tr", has_text=iid).first).to_be_visible()  # a row per clock hour
    expect(page.locator("#billing-summary")).to_contain_text("USD")
    with page.expect_download() as download:
        page.click("#billing-csv")
    csv_path = tmp_path / "report.csv"
    download.value.save_as(csv_path)
    table = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert table and {r["lineItem/ResourceId"] for r in table} == {iid}
    assert {r["resourceTags/user:env"] for r in table} == {"test"}
    screenshot(page, tmp_path / "desktop-billing.png", 1280)

    # budget: none, set, shown with its spend, removed
    page.click("#nav a[data-section='budget']")
    expect(page.locator("#budget-none")).to_be_visible()
    page.fill("#budget-amount", "5.00")
    page.select_option("#budget-action", "notify")
    page.click("#budget-save")
    expect(page.locator("#budget-amount-shown")).to_have_text("5.00 USD")
    expect(page.locator("#budget-percent")).to_have_text(re.compile(r"^\(\d+\.\d\d%\)$"))
    expect(page.locator("#budget-progress")).to_be_visible()
    expect(page.locator("#budget-status")).to_contain_text("At 100%: notify.")
    expect(page.locator("#budget-status")).not_to_contain_text("null")
    screenshot(page, tmp_path / "desktop-budget.png", 1280)
    page.fill("#budget-amount", "-1")
    page.click("#budget-save")
    expect(notice).to_contain_text("InvalidParameterValue: ")  # the API's error, code and message
    page.click("#budget-remove")
    page.click("#confirm-ok")
    expect(page.locator("#budget-none")).to_be_visible()

    assert page.evaluate("() => window.__sameDocument === true && window.__pwned === undefined")


def test_phone_width(open_console, console_server, tmp_path):
    svc, caller = console_server.service, console_server.user.caller
    page = open_console(viewport=PHONE, mobile=True)
    log_in(page, console_server.user)
    # something to show: an instance with a long name, launched through the API
    creds = console_server.user
    response = requests.post(f"{console_server.url}/v1/instances", timeout=10,
                             auth=(creds.access_key_id, creds.secret_access_key),
                             json={"size": "t3.micro", "key_name": "laptop", "ports": [{"guest_port": 80}],
                                   "tags": {"Name": "a-rather-long-instance-name-" + "x" * 60}})
    assert response.status_code == 202, response.text
    iid = response.json()["instances"][0]["id"]
    row = page.locator(f"#instances tr[data-id='{iid}']")
    expect(row.locator(".state")).to_have_text("running", timeout=20_000)
    expect(page.locator("#launch-button")).to_be_visible()
    expect(page.locator("#instances")).to_be_visible()
    expect(page.locator("#instances thead")).to_be_hidden()  # rows are cards
    no_sideways_scroll(page)
    screenshot(page, tmp_path / "phone-instances.png", PHONE["width"])

    row.locator("a").first.click()
    expect(page.locator("#main h1")).to_have_text(iid)
    page.click("#console-button")
    expect(page.locator("#console-output")).to_be_visible()
    no_sideways_scroll(page)
    screenshot(page, tmp_path / "phone-instance.png", PHONE["width"])

    page.click("#nav a[data-section='launch']")
    expect(page.locator("#launch-submit")).to_be_visible()
    page.click("#add-tag")
    page.click("#add-port")
    no_sideways_scroll(page)
    screenshot(page, tmp_path / "phone-launch.png", PHONE["width"])

    page.click("#nav a[data-section='billing']")
    page.wait_for_function("() => document.querySelector('#billing-chart').naturalWidth > 100")
    no_sideways_scroll(page)
    screenshot(page, tmp_path / "phone-billing.png", PHONE["width"])

    page.click("#nav a[data-section='budget']")
    expect(page.locator("#budget-form")).to_be_visible()
    no_sideways_scroll(page)
    svc.instances.terminate(caller, iid)


def test_a_wrong_secret_shows_the_error_and_no_data(open_console, console_server):
    page = open_console()
    v1 = []
    page.on("response", lambda r: v1.append((r.url, r.status)) if "/v1/" in r.url else None)
    expect(page.locator("#login")).to_be_visible()
    page.fill("#login-key", console_server.user.access_key_id)
    page.fill("#login-secret", "w" * 40)
    page.click("#login-submit")
    error = page.locator("#login-error")
    expect(error).to_be_visible()
    expect(error).to_have_text("AuthFailure: AWS was not able to validate the provided access credentials")
    expect(page.locator("#top")).to_be_hidden()
    expect(page.locator("#main")).to_be_hidden()
    assert page.locator("#instances").count() == 0
    assert page.locator("#main").inner_text() == ""
    assert page.input_value("#login-secret") == ""  # the wrong secret is not left in the form
    assert v1 == []  # nothing of the API was asked for, or shown
    assert page.context.cookies() == []
