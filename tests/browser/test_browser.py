"""One real browser (Debian's Chromium through Playwright) through the console's main job: a PMO analyst finds a
held record, fixes it, checks the fix with a dry run, resubmits it, and sees it go through — once.

Chromium: env HANDOFF_CHROMIUM, else `chromium` on the PATH. Without one the test is skipped, unless
HANDOFF_REQUIRE_BROWSER=1 (CI), where a missing browser is a failure. HANDOFF_SCREENSHOT=1 also saves the
record page to docs/screenshot.png (the README's picture).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from apps.demo.deals import make_opportunity
from apps.sync.models import AuditEntry, SyncRecord

from tests.browser.chromium import chromium_page, chromium_path
from tests.worker import run_worker, sandbox_count

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshot.png"


def test_a_pmo_analyst_fixes_a_held_record_in_the_browser_and_it_goes_through_once(live_server, deliverer, alice):
    executable = chromium_path()  # skips, or fails when HANDOFF_REQUIRE_BROWSER=1
    with chromium_page(executable) as page:
        _fix_a_held_record_in_the_browser(page, live_server, deliverer, alice)


def _fix_a_held_record_in_the_browser(page, live_server, deliverer, alice):
    from playwright.sync_api import expect

    opp = make_opportunity(random.Random(21), "no_legal_entity")
    [resp] = deliverer.deliver(opp, via="hubspot")
    assert resp.status_code == 202
    run_worker()
    record = SyncRecord.objects.get()
    assert (record.status, record.reason_code) == ("held", "missing_legal_entity")

    # log in: the console sends an anonymous visitor to the login page first
    page.goto(live_server.url + "/")
    expect(page).to_have_url(live_server.url + "/login/?next=/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("pw-alice")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Board")).to_be_visible()
    expect(page.get_by_test_id("held-total")).to_have_text("1")

    # Exceptions → the held record
    page.get_by_role("navigation").get_by_role("link", name="Exceptions").click()
    expect(page.get_by_role("heading", name="Exceptions")).to_be_visible()
    rows = page.get_by_test_id("exceptions").locator("tbody tr")
    expect(rows).to_have_count(1)
    rows.get_by_role("link", name=opp.name).click()
    expect(page).to_have_url(f"{live_server.url}/records/{record.pk}/")
    expect(page.get_by_test_id("record-status")).to_have_attribute("data-status", "held")
    expect(page.get_by_test_id("reason")).to_contain_text("No legal entity is set")
    expect(page.get_by_test_id("reason")).to_contain_text("Choose the legal entity")

    # the field at fault is highlighted; choose the legal entity and check the fix first
    legal_entity = page.locator("select[name=legal_entity]")
    expect(legal_entity).to_have_class("at-fault")
    legal_entity.select_option("US01")
    page.get_by_role("button", name="Check (dry run)").click()
    expect(page.get_by_test_id("dryrun")).to_contain_text("Passes every rule")
    expect(page.get_by_test_id("dryrun")).to_contain_text("US01")
    record.refresh_from_db()
    assert record.status == "held" and record.version == 1  # a dry run changes nothing

    if os.environ.get("HANDOFF_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)

    page.get_by_role("button", name="Resubmit").click()
    expect(page.locator(".messages li.success")).to_have_text("Resubmitted: the workers have it now.")
    expect(page.get_by_test_id("record-status")).to_have_attribute("data-status", "pending")

    run_worker()
    page.reload()

    status = page.get_by_test_id("record-status")
    expect(status).to_have_attribute("data-status", "succeeded")
    expect(status.locator(".badge")).to_have_text("Succeeded")
    expect(page.get_by_test_id("ids")).to_contain_text("ERP customer")
    expect(page.locator("#fix-form")).to_have_count(0)
    record.refresh_from_db()
    assert record.status == "succeeded", record.message
    assert record.current_payload["legal_entity"] == "US01"
    assert AuditEntry.objects.filter(record=record, actor=alice, action="resubmit").count() == 1
    assert sandbox_count("netsuite", "customer") == 1
    assert sandbox_count("kantata", "workspace") == 1
