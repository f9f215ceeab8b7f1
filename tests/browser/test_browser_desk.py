"""The exception desk in a real browser (Debian's Chromium through Playwright), end to end against the live
server, the sandboxes and a real RQ worker:

1. filter the queue, group it by error, open a group and a record, fix it, dry-run it, resubmit it — once;
2. a bulk fix of every record a filter selects: parameter step, preview, confirm, progress;
3. what a viewer and another team see (and what the server refuses them);
4. two people on the same record: the freshness banner, and the version check on a stale resubmit;
5. the README's screenshots (docs/screenshots/*.png) when HANDOFF_SCREENSHOT=1.

The browser helpers are in tests/browser/chromium.py, the switch that lets the ORM run beside Playwright in
tests/browser/conftest.py.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import pytest

from apps.demo.deals import make_opportunity, scenario_mix
from apps.sandbox.models import SandboxObject
from apps.sync.models import AuditEntry, BulkAction, SyncRecord

from tests.browser.chromium import chromium_page, chromium_path
from tests.worker import run_worker, sandbox_count

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
REASON = "missing_legal_entity"


# ---------------------------------------------------------------- helpers


def _expect():
    from playwright.sync_api import expect

    return expect


def _screenshot(page, name: str) -> None:
    if os.environ.get("HANDOFF_SCREENSHOT") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


def _us_deal(rng: random.Random, scenario: str):
    """An opportunity of a US customer (USD, a US tax id): with no legal entity, US01 is the fix that passes."""
    while True:
        opp = make_opportunity(rng, scenario)
        if opp.currency == "USD" and opp.country == "US":
            return opp


def _deliver(deliverer, scenarios: list[str], seed: int = 7, us_only: bool = True) -> list:
    rng = random.Random(seed)
    opps = []
    for i, scenario in enumerate(scenarios):
        opp = _us_deal(rng, scenario) if us_only and scenario == "no_legal_entity" else make_opportunity(rng, scenario)
        [resp] = deliverer.deliver(opp, via="hubspot" if i % 2 == 0 else "salesforce")
        assert resp.status_code in (200, 202), resp.text
        opps.append(opp)
    run_worker()
    return opps


def _login(page, live_server, username: str) -> None:
    expect = _expect()
    page.goto(live_server.url + "/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill("pw-" + username)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Board")).to_be_visible()


def _new_page(page):
    """A second, independent session (its own cookies) in the same browser."""
    context = page.context.browser.new_context(viewport={"width": 1280, "height": 900})
    other = context.new_page()
    other.set_default_timeout(15_000)
    return other


def _filter_by_reason(page, reason: str, count: int) -> None:
    expect = _expect()
    page.get_by_label("Reason").select_option(reason)  # htmx swaps the results and pushes the URL
    expect(page).to_have_url(re.compile(r"[?&]reason=" + reason))
    assert "reason=" + reason in page.url
    expect(page.get_by_test_id("count")).to_have_text(f"{count} record{'s' if count != 1 else ''}")
    expect(page.get_by_test_id("exceptions").locator("tbody tr")).to_have_count(count)


def _csrf(page) -> str:
    return next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")


# ---------------------------------------------------------------- 1. filter, group, open, fix, resubmit


def test_filter_group_open_fix_and_resubmit_one_record(live_server, deliverer, alice):
    executable = chromium_path()
    expect = _expect()
    opps = _deliver(deliverer, ["no_legal_entity"] * 3 + ["currency_not_enabled"] + ["good"] * 2, seed=11)
    held = SyncRecord.objects.filter(status="held")
    assert sorted(held.values_list("reason_code", flat=True)) == ["currency_not_enabled", REASON, REASON, REASON]
    assert SyncRecord.objects.filter(status="succeeded").count() == 2
    customers_before = sandbox_count("netsuite", "customer")
    workspaces_before = sandbox_count("kantata", "workspace")
    assert (customers_before, workspaces_before) == (2, 2)  # the two good ones

    with chromium_page(executable) as page:
        _login(page, live_server, "alice")
        page.get_by_role("navigation").get_by_role("link", name="Exceptions").click()
        expect(page.get_by_role("heading", name="Exceptions")).to_be_visible()
        expect(page.get_by_test_id("count")).to_have_text("4 records")

        _filter_by_reason(page, REASON, 3)

        # grouped by error: one group of three
        page.get_by_test_id("grouped-view").click()
        expect(page).to_have_url(re.compile(r"view=groups"))
        assert "reason=" + REASON in page.url  # the filter survives the switch
        groups = page.get_by_test_id("groups").locator("tbody tr")
        expect(groups).to_have_count(1)
        expect(groups.first).to_contain_text(REASON)
        expect(groups.first.locator("td.num b")).to_have_text("3")
        groups.first.get_by_test_id("group-link").click()
        expect(page).to_have_url(re.compile(r"signature="))
        rows = page.get_by_test_id("exceptions").locator("tbody tr")
        expect(rows).to_have_count(3)

        # open one record of the group
        record_id = int(rows.first.get_attribute("data-record"))
        record = SyncRecord.objects.get(pk=record_id)
        assert record.reason_code == REASON
        opp = next(o for o in opps if o.name == record.title)
        rows.first.get_by_role("link", name=record.title).click()
        expect(page).to_have_url(f"{live_server.url}/records/{record_id}/")
        expect(page.get_by_test_id("record-status")).to_have_attribute("data-status", "held")

        legal_entity = page.locator("select[name=legal_entity]")
        expect(legal_entity).to_have_class("at-fault")
        legal_entity.select_option("US01")
        page.get_by_role("button", name="Check (dry run)").click()
        expect(page.get_by_test_id("dryrun")).to_contain_text("Passes every rule")
        record.refresh_from_db()
        assert (record.status, record.version) == ("held", 1)  # the dry run changed nothing

        page.get_by_role("button", name="Resubmit", exact=True).click()
        expect(page.locator(".messages li.success")).to_have_text("Resubmitted: the workers have it now.")
        run_worker()
        page.reload()
        expect(page.get_by_test_id("record-status")).to_have_attribute("data-status", "succeeded")
        expect(page.get_by_test_id("ids")).to_contain_text("ERP customer")
        expect(page.locator("#fix-form")).to_have_count(0)

    record.refresh_from_db()
    assert record.status == "succeeded", record.message
    assert record.current_payload["legal_entity"] == "US01"
    assert AuditEntry.objects.filter(record=record, actor=alice, action="resubmit").count() == 1
    # exactly one more customer and workspace: this record's, once
    assert sandbox_count("netsuite", "customer") == customers_before + 1
    assert sandbox_count("kantata", "workspace") == workspaces_before + 1
    assert SandboxObject.objects.filter(system="netsuite", object_type="customer",
                                        data__companyName=opp.account).count() == 1
    # the other two of the group and the currency one are still held, untouched
    assert SyncRecord.objects.filter(status="held", reason_code=REASON).count() == 2
    assert SyncRecord.objects.filter(status="held", reason_code="currency_not_enabled").count() == 1


# ---------------------------------------------------------------- 2. bulk fix of a filtered group


def test_bulk_fix_of_every_matching_record_with_a_preview(live_server, deliverer, alice):
    executable = chromium_path()
    expect = _expect()
    _deliver(deliverer, ["no_legal_entity"] * 3 + ["good"], seed=12)
    held_ids = set(SyncRecord.objects.filter(status="held", reason_code=REASON).values_list("id", flat=True))
    assert len(held_ids) == 3

    with chromium_page(executable) as page:
        _login(page, live_server, "alice")
        page.goto(live_server.url + "/exceptions/")
        _filter_by_reason(page, REASON, 3)

        page.get_by_label("Bulk action").select_option("fix")
        page.get_by_test_id("bulk-all").click()
        expect(page.get_by_role("heading", name="Bulk action: fix and resubmit")).to_be_visible()
        params = page.get_by_test_id("bulk-params-form")
        expect(params).to_contain_text("Every held record matching")
        params.get_by_label("Legal entity").select_option("US01")
        params.get_by_test_id("preview").click()

        expect(page).to_have_url(re.compile(r"/bulk/\d+/$"))
        bulk = BulkAction.objects.get()
        assert (bulk.action, bulk.status, set(bulk.record_ids)) == ("fix", "previewed", held_ids)
        assert bulk.params["changes"] == {"legal_entity": "US01"}
        expect(page.get_by_test_id("bulk-params")).to_contain_text("US01")
        expect(page.get_by_test_id("count-total")).to_have_text("3")
        expect(page.get_by_test_id("count-pass")).to_have_text("3")
        expect(page.get_by_test_id("count-fail")).to_have_text("0")
        # nothing changed yet
        assert SyncRecord.objects.filter(pk__in=held_ids, status="held", version=1).count() == 3

        page.get_by_test_id("confirm").click()
        expect(page.locator(".messages li.success")).to_have_text("Confirmed: the bulk action is running.")
        expect(page.get_by_test_id("bulk-progress")).to_be_visible()

        run_worker()  # the bulk job, then the records it resubmitted
        page.reload()
        progress = page.get_by_test_id("bulk-progress")
        expect(progress).to_have_attribute("data-status", "done")
        expect(progress.get_by_test_id("done")).to_have_text("3")
        expect(progress).to_contain_text("3 of 3 (100%)")
        expect(progress.get_by_test_id("succeeded")).to_have_text("3")
        expect(progress.get_by_test_id("failed")).to_have_text("0")

    bulk.refresh_from_db()
    assert (bulk.status, bulk.done, bulk.succeeded, bulk.failed) == ("done", 3, 3, 0)
    records = SyncRecord.objects.filter(pk__in=held_ids)
    assert sorted(r.status for r in records) == ["succeeded"] * 3, [r.message for r in records]
    assert all(r.current_payload["legal_entity"] == "US01" for r in records)
    audit = AuditEntry.objects.filter(action="bulk_fix", actor=alice)
    assert set(audit.values_list("record_id", flat=True)) == held_ids
    assert sandbox_count("netsuite", "customer") == 4 and sandbox_count("kantata", "workspace") == 4


# ---------------------------------------------------------------- 3. permissions


def test_a_viewer_and_another_team_cannot_fix_a_pmo_record(live_server, deliverer, dave, bob):
    executable = chromium_path()
    expect = _expect()
    _deliver(deliverer, ["no_legal_entity"], seed=13)
    record = SyncRecord.objects.get()
    assert (record.status, record.owner_team) == ("held", "pmo")
    url = f"{live_server.url}/records/{record.pk}/"
    post = {"version": str(record.version), "action": "resubmit", "legal_entity": "US01"}

    with chromium_page(executable) as page:
        # dave, a viewer: reads the record, but no fix form, no claim, no desk at all
        _login(page, live_server, "dave")
        page.goto(url)
        expect(page.get_by_test_id("record-status")).to_have_attribute("data-status", "held")
        expect(page.get_by_test_id("reason")).to_contain_text("No legal entity is set")
        expect(page.locator("#fix-form")).to_have_count(0)
        expect(page.get_by_test_id("claim")).to_have_count(0)
        expect(page.get_by_role("button", name="Resubmit")).to_have_count(0)
        expect(page.get_by_role("heading", name="Work it")).to_have_count(0)
        # the server refuses too
        token = _csrf(page)
        r = page.request.post(url + "action/", form={**post, "csrfmiddlewaretoken": token},
                              headers={"X-CSRFToken": token})
        assert r.status == 403, r.text()
        r = page.request.post(url + "desk/", form={"action": "claim", "version": str(record.version),
                                                   "csrfmiddlewaretoken": token}, headers={"X-CSRFToken": token})
        assert r.status == 403, r.text()

        # bob, finance ops: may fix his own team's records, not this PMO one
        bob_page = _new_page(page)
        _login(bob_page, live_server, "bob")
        bob_page.goto(url)
        expect(bob_page.get_by_test_id("record-status")).to_have_attribute("data-status", "held")
        expect(bob_page.get_by_test_id("record-status")).to_contain_text("owner PMO")
        expect(bob_page.locator("#fix-form")).to_have_count(0)
        expect(bob_page.get_by_test_id("claim")).to_have_count(0)
        expect(bob_page.get_by_role("button", name="Resubmit")).to_have_count(0)
        token = _csrf(bob_page)
        r = bob_page.request.post(url + "action/", form={**post, "csrfmiddlewaretoken": token},
                                  headers={"X-CSRFToken": token})
        assert r.status == 403, r.text()
        assert "your role cannot act on it" in r.text()
        r = bob_page.request.post(url + "desk/", form={"action": "claim", "version": str(record.version),
                                                       "csrfmiddlewaretoken": token}, headers={"X-CSRFToken": token})
        assert r.status == 403, r.text()

    record.refresh_from_db()
    assert (record.status, record.version, record.assignee_id) == ("held", 1, None)
    assert record.current_payload["legal_entity"] == ""
    assert not AuditEntry.objects.filter(record=record).exclude(action="comment").exists()
    assert sandbox_count("netsuite", "customer") == 0


# ---------------------------------------------------------------- 4. two sessions, one record


def test_a_second_session_sees_the_change_and_a_stale_resubmit_is_refused(live_server, deliverer, alice, carol):
    executable = chromium_path()
    expect = _expect()
    _deliver(deliverer, ["no_legal_entity"], seed=14)
    record = SyncRecord.objects.get()
    url = f"{live_server.url}/records/{record.pk}/"

    with chromium_page(executable) as alice_page:
        _login(alice_page, live_server, "alice")
        alice_page.goto(url)
        expect(alice_page.get_by_role("button", name="Resubmit", exact=True)).to_be_visible()
        expect(alice_page.get_by_test_id("stale")).to_have_count(0)
        alice_page.locator("select[name=legal_entity]").select_option("US01")

        carol_page = _new_page(alice_page)
        _login(carol_page, live_server, "carol")
        carol_page.goto(url)
        carol_page.get_by_test_id("claim").click()
        expect(carol_page.locator(".messages li.success")).to_have_text("You own this record now.")
        expect(carol_page.get_by_test_id("assignee")).to_have_text("carol")
        record.refresh_from_db()
        assert (record.assignee.username, record.version) == ("carol", 2)

        # alice's page polls every 5 s: the banner appears and her fix actions go
        expect(alice_page.get_by_test_id("stale")).to_be_visible(timeout=7_000)
        expect(alice_page.get_by_test_id("stale")).to_contain_text("claim by carol")
        expect(alice_page.locator("#fix-actions")).to_have_text("Actions are disabled until you reload.")
        expect(alice_page.get_by_role("button", name="Resubmit", exact=True)).to_have_count(0)

        # she submits her old form anyway (version 1): refused, and told why
        assert alice_page.locator("#fix-form input[name=version]").input_value() == "1"
        alice_page.evaluate("""() => {
            const form = document.getElementById('fix-form');
            const action = document.createElement('input');
            action.type = 'hidden'; action.name = 'action'; action.value = 'resubmit';
            form.appendChild(action);
            form.submit();
        }""")
        expect(alice_page.locator(".messages li.error")).to_contain_text("changed by someone else")
        expect(alice_page.get_by_test_id("record-status")).to_have_attribute("data-status", "held")
        expect(alice_page.get_by_test_id("assignee")).to_have_text("carol")
        expect(alice_page.get_by_test_id("stale")).to_have_count(0)  # the reloaded page is current

    record.refresh_from_db()
    assert (record.status, record.version, record.assignee.username) == ("held", 2, "carol")
    assert record.current_payload["legal_entity"] == ""  # alice's fix did not land
    assert list(AuditEntry.objects.filter(record=record).values_list("action", "actor__username")) == [
        ("claim", "carol")]
    assert sandbox_count("netsuite", "customer") == 0


# ---------------------------------------------------------------- 5. screenshots with realistic data


def test_the_desk_screens_render_with_realistic_traffic(live_server, deliverer, carol):
    """~20 mixed opportunities; every desk screen renders them. With HANDOFF_SCREENSHOT=1 this also saves the
    README's pictures to docs/screenshots/."""
    executable = chromium_path()
    expect = _expect()
    _deliver(deliverer, scenario_mix(20, random.Random(5)), seed=15, us_only=False)
    held = SyncRecord.objects.filter(status__in=SyncRecord.ACTIONABLE)
    n_held = held.count()
    assert n_held >= 5 and SyncRecord.objects.filter(status="succeeded").exists()

    with chromium_page(executable) as page:
        _login(page, live_server, "carol")  # the integration admin sees every team's queue

        page.goto(live_server.url + "/exceptions/?team=any")
        expect(page.get_by_test_id("count")).to_have_text(f"{n_held} records")
        page.locator("details.more-filters summary").click()
        expect(page.get_by_label("Stage")).to_be_visible()
        _assert_no_horizontal_overflow(page)
        _screenshot(page, "queue.png")

        page.get_by_test_id("grouped-view").click()
        groups = page.get_by_test_id("groups").locator("tbody tr")
        expect(groups).to_have_count(held.values("error_signature").distinct().count())
        _assert_no_horizontal_overflow(page)
        _screenshot(page, "groups.png")

        record = held.filter(reason_code=REASON).order_by("id").first()
        assert record is not None, "the mix has no record without a legal entity"
        page.goto(f"{live_server.url}/records/{record.pk}/")
        expect(page.get_by_test_id("record-status")).to_have_attribute("data-status", "held")
        entity = {"USD": "US01", "GBP": "UK01", "EUR": "DE01"}[record.current_payload["currency"]]
        page.locator("select[name=legal_entity]").select_option(entity)
        page.get_by_role("button", name="Check (dry run)").click()
        expect(page.get_by_test_id("dryrun")).to_contain_text("Passes every rule")
        _assert_no_horizontal_overflow(page)
        _screenshot(page, "record.png")

        # bulk: the same fix for every held record, previewed (not confirmed)
        page.goto(live_server.url + "/exceptions/?team=any")
        page.get_by_label("Bulk action").select_option("fix")
        page.get_by_test_id("bulk-all").click()
        page.get_by_test_id("bulk-params-form").get_by_label("Legal entity").select_option("US01")
        page.get_by_test_id("preview").click()
        expect(page.get_by_test_id("count-total")).to_have_text(str(n_held))
        expect(page.get_by_test_id("confirm")).to_be_visible()
        _assert_no_horizontal_overflow(page)
        _screenshot(page, "bulk.png")

        page.goto(live_server.url + "/boards/")
        expect(page.get_by_test_id("workflow-board")).to_be_visible()
        _assert_no_horizontal_overflow(page)
        _screenshot(page, "board.png")

        page.goto(live_server.url + "/kpis/")
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        _assert_no_horizontal_overflow(page)
        _screenshot(page, "kpis.png")

    assert SyncRecord.objects.filter(status__in=SyncRecord.ACTIONABLE).count() == n_held  # looking changed nothing
    assert BulkAction.objects.get().status == "previewed"


def _assert_no_horizontal_overflow(page) -> None:
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 1280, f"{page.url} is {width}px wide in a 1280px window"
