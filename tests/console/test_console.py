"""The console through Django's test client: who may see and do what, what each screen shows, and that the
fix form's actions (dry run, resubmit, ignore) do what they say — version-checked and audited."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.sync.models import AuditEntry, SyncRecord

from tests.builders import fix_post, held_record, opportunity_payload
from tests.pages import HTMX, linked_record_ids, table_rows


def record_url(record) -> str:
    return f"/records/{record.pk}/"


def action_url(record) -> str:
    return f"/records/{record.pk}/action/"


# ---------------------------------------------------------------- who gets in


@pytest.mark.django_db
def test_every_console_page_and_admin_send_an_anonymous_user_to_the_login_page(client, connections):
    record = held_record(connections)
    for url in ["/", "/exceptions/", "/exceptions/?reason=missing_legal_entity", record_url(record), "/runs/",
                "/events/"]:
        resp = client.get(url)
        assert resp.status_code == 302, url
        assert resp.url.startswith("/login/?next="), (url, resp.url)
    # the admin keeps its own login page (same users, same passwords)
    for url in ["/admin/", "/admin/sync/syncrecord/", "/admin/rq/"]:
        resp = client.get(url)
        assert resp.status_code == 302, url
        assert re.match(r"^/(admin/)?login/\?next=", resp.url), (url, resp.url)
        assert "/admin/" in resp.url.split("next=", 1)[1].replace("%2F", "/"), (url, resp.url)
    # a POST to an action is refused the same way, and changes nothing
    resp = client.post(action_url(record), fix_post(record, "resubmit", legal_entity="US01"))
    assert resp.status_code == 302 and resp.url.startswith("/login/?next=")
    record.refresh_from_db()
    assert record.status == "held" and record.version == 1
    # the login page itself is open
    assert client.get("/login/").status_code == 200


@pytest.mark.django_db
def test_health_probes_answer_without_login(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}

    resp = client.get("/readyz")
    assert resp.status_code == 200
    body = resp.json()
    assert body["database"] == "ok"
    assert body["redis"] == "ok"
    assert body["status"] == "ok"


# ---------------------------------------------------------------- the board


@pytest.mark.django_db
def test_the_board_counts_records_per_workflow_and_status(client, dave, connections):
    wanted = {"pending": 2, "retrying": 1, "held": 3, "succeeded": 5, "dead": 4}
    for status, n in wanted.items():
        for _ in range(n):
            held_record(connections, status=status)
    client.force_login(dave)

    resp = client.get("/")

    assert resp.status_code == 200
    html = resp.content.decode()
    assert "<html" in html
    rows = table_rows(html, "board")
    assert len(rows) == 7  # every registered workflow has a row
    [row] = [r for r in rows if r[0] == "Quote to project"]
    columns = ["pending", "in_progress", "retrying", "held", "succeeded", "ignored", "dead"]
    assert row[0] == "Quote to project"
    assert row[1:] == [str(wanted.get(c, 0)) for c in columns] + [str(sum(wanted.values()))]
    header = re.search(r'data-testid="board">\s*<thead>(.*?)</thead>', html, re.S).group(1)
    assert [re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<th[^>]*>.*?</th>", header)] == [
        "Workflow", "Pending", "In progress", "Retrying", "Held", "Succeeded", "Ignored", "Dead letter", "Total"]
    # held + dead by reason: 7 actionable records with the one reason
    assert re.search(r"missing_legal_entity</a></td><td>pmo</td><td class=\"num\">7</td>", html)


@pytest.mark.django_db
def test_the_board_counts_held_records_for_the_users_own_team(client, alice, bob, connections):
    held_record(connections, owner_team="pmo")
    held_record(connections, owner_team="pmo")
    held_record(connections, owner_team="finance_ops", reason_code="unknown_billing_terms",
                fault_fields=["billing_terms"])

    client.force_login(alice)
    assert re.search(r'data-testid="held-total">2<', client.get("/").content.decode())
    client.force_login(bob)
    assert re.search(r'data-testid="held-total">1<', client.get("/").content.decode())


@pytest.mark.django_db
def test_an_htmx_request_for_the_board_gets_only_the_board_partial(client, alice, connections):
    held_record(connections)
    client.force_login(alice)

    resp = client.get("/", **HTMX)

    assert resp.status_code == 200
    html = resp.content.decode()
    assert "<html" not in html and "<header" not in html
    assert html.strip().startswith('<div id="board"')
    [row] = [r for r in table_rows(html, "board") if r[0] == "Quote to project"]
    assert row[4] == "1"  # the held column


# ---------------------------------------------------------------- exceptions


@pytest.mark.django_db
def test_the_exceptions_list_shows_held_and_dead_records_only(client, alice, connections):
    held = held_record(connections)
    dead = held_record(connections, status="dead", reason_code="internal_error", fault_fields=[],
                       owner_team="integration_admin", message="The worker failed unexpectedly.")
    done = held_record(connections, status="succeeded")
    waiting = held_record(connections, status="pending")
    client.force_login(alice)

    html = client.get("/exceptions/?team=any").content.decode()

    assert linked_record_ids(html) == {held.pk, dead.pk}
    assert "2 records" in html
    assert done.title not in html and waiting.title not in html
    assert "missing_legal_entity" in html and "No legal entity is set on" in html


@pytest.mark.django_db
def test_the_exceptions_list_filters_by_reason_team_and_search_from_the_url(client, bob, connections):
    le = held_record(connections)
    terms = held_record(connections, reason_code="unknown_billing_terms", fault_fields=["billing_terms"],
                        owner_team="finance_ops", message="Billing terms “NET99” are not known.",
                        title="Contoso — data platform", payload=opportunity_payload(billing_terms="NET99"))
    tax = held_record(connections, reason_code="downstream_validation", fault_fields=["account.tax_id"],
                      owner_team="finance_ops", message="NetSuite refused the tax id.", title="Fabrikam — audit")
    client.force_login(bob)

    def ids(query):
        resp = client.get("/exceptions/" + query)
        assert resp.status_code == 200
        return linked_record_ids(resp.content.decode())

    assert ids("") == {terms.pk, tax.pk}  # Bob is in finance ops: his team's queue by default
    assert ids("?team=any") == {le.pk, terms.pk, tax.pk}
    assert ids("?team=any&reason=unknown_billing_terms") == {terms.pk}
    assert ids("?team=finance_ops") == {terms.pk, tax.pk}
    assert ids("?team=pmo") == {le.pk}
    assert ids("?q=contoso") == {terms.pk}  # part of the title, case-insensitive
    assert ids(f"?team=any&q={le.source_key}") == {le.pk}  # source id
    assert ids(f"?team=any&q={le.current_payload['deal_id']}") == {le.pk}  # the bare deal id
    assert ids("?team=finance_ops&q=fabrikam") == {tax.pk}
    assert ids("?reason=missing_legal_entity&team=finance_ops") == set()
    # the filter form shows what is selected, so the URL is the state
    html = client.get("/exceptions/?reason=unknown_billing_terms&team=finance_ops&q=conto").content.decode()
    assert '<option value="unknown_billing_terms" selected>' in html
    assert '<option value="finance_ops" selected>' in html
    assert 'name="q" value="conto"' in html


@pytest.mark.django_db
def test_an_htmx_request_for_exceptions_gets_only_the_rows_partial(client, alice, connections):
    record = held_record(connections)
    client.force_login(alice)

    html = client.get("/exceptions/?team=pmo", **HTMX).content.decode()

    assert "<html" not in html and 'id="filters"' not in html  # not the page, not the filter form
    assert html.strip().startswith('<div id="results"')
    assert linked_record_ids(html) == {record.pk}
    # the rows poll with the same filter
    assert 'hx-get="/exceptions/?team=pmo"' in html


@pytest.mark.django_db
def test_the_exceptions_list_runs_the_same_number_of_queries_for_5_or_50_rows(client, alice, connections):
    client.force_login(alice)
    for _ in range(5):
        held_record(connections)
    client.get("/exceptions/")  # warm up (session, content types)

    with CaptureQueriesContext(connection) as few:
        resp = client.get("/exceptions/")
    assert len(linked_record_ids(resp.content.decode())) == 5

    for _ in range(45):
        held_record(connections)
    with CaptureQueriesContext(connection) as many:
        resp = client.get("/exceptions/")
    assert len(linked_record_ids(resp.content.decode())) == 50

    assert len(many) == len(few), [q["sql"] for q in many.captured_queries]
    assert len(few) <= 10


# ---------------------------------------------------------------- the record page


@pytest.mark.django_db
def test_the_record_page_explains_the_hold_and_highlights_the_field_at_fault(client, alice, connections):
    record = held_record(connections)
    client.force_login(alice)

    resp = client.get(record_url(record))

    assert resp.status_code == 200
    html = resp.content.decode()
    assert 'data-status="held"' in html
    assert f"No legal entity is set on “{record.title}”" in html
    assert "<code>missing_legal_entity</code>" in html
    # the fix form, with the legal entity marked as the field at fault (and only it)
    assert 'id="fix-form"' in html
    select = re.search(r'<select[^>]*name="legal_entity"[^>]*>', html).group(0)
    assert 'class="at-fault"' in select and 'aria-invalid="true"' in select
    currency = re.search(r'<select[^>]*name="currency"[^>]*>', html).group(0)
    assert "at-fault" not in currency
    assert html.count('class="at-fault"') == 1
    assert re.search(r'<label class="fault">Legal entity <em>needs a fix</em>', html)
    # the valid legal entities are offered
    assert '<option value="US01">' in html and '<option value="DE01">' in html
    assert f'name="version" value="{record.version}"' in html


@pytest.mark.django_db
def test_a_viewer_sees_the_record_but_no_fix_form_and_may_not_post_an_action(client, dave, connections):
    record = held_record(connections)
    client.force_login(dave)

    html = client.get(record_url(record)).content.decode()
    assert "No legal entity is set on" in html
    assert 'id="fix-form"' not in html and "Resubmit" not in html

    for action in ("resubmit", "dry_run", "ignore"):
        resp = client.post(action_url(record), fix_post(record, action, legal_entity="US01", reason="because"))
        assert resp.status_code == 403, action
    record.refresh_from_db()
    assert (record.status, record.version, record.current_payload["legal_entity"]) == ("held", 1, "")
    assert not AuditEntry.objects.exists()


@pytest.mark.django_db
def test_a_record_that_went_through_shows_no_fix_form(client, alice, connections):
    record = held_record(connections, status="succeeded")
    client.force_login(alice)

    html = client.get(record_url(record)).content.decode()

    assert 'data-status="succeeded"' in html and 'id="fix-form"' not in html


@pytest.mark.django_db
def test_the_action_url_only_accepts_post(client, alice, connections):
    record = held_record(connections)
    client.force_login(alice)
    assert client.get(action_url(record)).status_code == 405


@pytest.mark.django_db
def test_markup_in_a_records_title_and_message_is_shown_escaped(client, alice, connections):
    record = held_record(connections, title='<script>alert("title")</script>',
                         message='Bad <script>alert("message")</script> <img src=x onerror=alert(1)>')
    client.force_login(alice)

    for html in (client.get(record_url(record)).content.decode(), client.get("/exceptions/").content.decode()):
        assert "<script>alert(" not in html
        assert "<img src=x" not in html
        assert "&lt;script&gt;alert(" in html


@pytest.mark.django_db
def test_the_raw_payload_is_shown_to_the_integration_admin_only(client, alice, carol, dave, connections):
    record = held_record(connections)
    marker = f"&quot;opportunity_id&quot;: &quot;{record.current_payload['opportunity_id']}&quot;"

    client.force_login(carol)
    html = client.get(record_url(record)).content.decode()
    assert "<h2>Payload</h2>" in html and marker in html

    for user in (alice, dave):
        client.force_login(user)
        html = client.get(record_url(record)).content.decode()
        assert "<h2>Payload</h2>" not in html and "opportunity_id" not in html


# ---------------------------------------------------------------- fixing


@pytest.mark.django_db
def test_a_dry_run_lists_the_problems_left_and_changes_nothing(client, alice, connections):
    record = held_record(connections)
    client.force_login(alice)

    # DE01 cannot invoice in USD: a different problem remains
    resp = client.post(action_url(record), fix_post(record, "dry_run", legal_entity="DE01"), **HTMX)

    assert resp.status_code == 200
    html = resp.content.decode()
    assert "<html" not in html and html.strip().startswith('<div id="dryrun"')
    assert "Still failing" in html and "<code>currency_not_enabled</code>" in html
    assert "DE01 cannot invoice in USD" in html
    assert "Passes every rule" not in html
    record.refresh_from_db()
    assert (record.status, record.version, record.current_payload["legal_entity"]) == ("held", 1, "")
    assert not AuditEntry.objects.exists()


@pytest.mark.django_db
def test_a_dry_run_of_a_good_fix_passes_and_shows_the_plan(client, alice, connections):
    record = held_record(connections)
    client.force_login(alice)

    resp = client.post(action_url(record), fix_post(record, "dry_run", legal_entity="US01"), **HTMX)

    html = resp.content.decode()
    assert resp.status_code == 200 and "<html" not in html
    assert "Passes every rule of Quote to project" in html
    assert "Still failing" not in html
    # before → after of what changes, and the systems it would go to
    assert re.search(r"<td>legal_entity</td><td>—</td><td>US01</td>", html)
    assert "ERP — Customer in ERP" in html and "PSA — Project in PSA" in html
    record.refresh_from_db()
    assert record.status == "held" and record.version == 1


@pytest.mark.django_db
def test_resubmitting_a_valid_fix_sends_the_record_back_to_the_workers_and_audits_it(client, alice, connections):
    record = held_record(connections)
    client.force_login(alice)

    resp = client.post(action_url(record), fix_post(record, "resubmit", legal_entity="US01",
                                                      reason="from the signed SOW"), follow=True)

    assert resp.status_code == 200
    assert resp.redirect_chain == [(record_url(record), 302)]
    html = resp.content.decode()
    assert "Resubmitted: the workers have it now." in html
    assert 'data-status="pending"' in html
    record.refresh_from_db()
    assert record.status == "pending"
    assert record.version == 2
    assert record.current_payload["legal_entity"] == "US01"
    assert record.original_payload["legal_entity"] == ""
    assert (record.reason_code, record.fault_fields, record.message) == ("", [], "")
    entry = AuditEntry.objects.get(record=record)
    assert (entry.actor, entry.action, entry.before, entry.after, entry.reason) == (
        alice, "resubmit", {"legal_entity": ""}, {"legal_entity": "US01"}, "from the signed SOW")
    # the page now shows what changed from the original, and the audit line
    assert re.search(r"<td>legal_entity</td><td>—</td><td>US01</td>", html)
    assert "resubmit by alice" in html


@pytest.mark.django_db
def test_an_htmx_resubmit_redirects_the_browser_to_the_record(client, alice, connections):
    record = held_record(connections)
    client.force_login(alice)

    resp = client.post(action_url(record), fix_post(record, "resubmit", legal_entity="US01"), **HTMX)

    assert resp.status_code == 200
    assert resp["HX-Redirect"] == record_url(record)
    record.refresh_from_db()
    assert record.status == "pending" and record.version == 2


@pytest.mark.django_db
def test_a_fix_that_still_fails_the_rules_is_not_resubmitted(client, alice, connections):
    record = held_record(connections)
    client.force_login(alice)

    resp = client.post(action_url(record), fix_post(record, "resubmit", legal_entity="DE01"))

    assert resp.status_code == 422
    html = resp.content.decode()
    assert "Not resubmitted: the fix does not pass the workflow" in html
    assert "DE01 cannot invoice in USD" in html
    # the form keeps what the user chose
    assert re.search(r'<option value="DE01" selected>', html)
    record.refresh_from_db()
    assert (record.status, record.version, record.current_payload["legal_entity"]) == ("held", 1, "")
    assert not AuditEntry.objects.exists()


@pytest.mark.django_db
def test_a_resubmit_with_a_stale_version_shows_the_conflict_and_changes_nothing(client, alice, bob, connections):
    record = held_record(connections)
    stale = fix_post(record, "resubmit", legal_entity="UK01")
    # bob changes the record first (here: another edit bumps the version, the record stays held)
    SyncRecord.objects.filter(pk=record.pk).update(version=2, current_payload={**record.current_payload,
                                                                                 "billing_terms": "NET45"})
    client.force_login(alice)

    resp = client.post(action_url(record), stale, follow=True)

    assert resp.status_code == 200
    html = resp.content.decode()
    assert "This record was changed by someone else (version 2, you had 1)" in html
    assert 'class="error"' in html
    record.refresh_from_db()
    assert record.status == "held" and record.version == 2
    assert record.current_payload["legal_entity"] == "" and record.current_payload["billing_terms"] == "NET45"
    assert not AuditEntry.objects.exists()
    # the reloaded form carries the new version
    assert 'name="version" value="2"' in html


@pytest.mark.django_db
def test_resubmitting_a_record_that_is_no_longer_held_is_refused(client, alice, connections):
    record = held_record(connections)
    post = fix_post(record, "resubmit", legal_entity="US01")
    SyncRecord.objects.filter(pk=record.pk).update(status="in_progress")
    client.force_login(alice)

    html = client.post(action_url(record), post, follow=True).content.decode()

    assert "This record is in progress, not held." in html
    record.refresh_from_db()
    assert record.status == "in_progress" and record.version == 1
    assert not AuditEntry.objects.exists()


@pytest.mark.django_db
def test_ignoring_a_record_needs_a_reason(client, alice, connections):
    record = held_record(connections)
    client.force_login(alice)

    resp = client.post(action_url(record), fix_post(record, "ignore", reason="   "), follow=True)

    assert "A reason is required to resolve a record without resubmitting it." in resp.content.decode()
    record.refresh_from_db()
    assert record.status == "held" and record.version == 1
    assert not AuditEntry.objects.exists()

    resp = client.post(action_url(record), fix_post(record, "ignore", reason="Duplicate of a deal closed by hand"),
                       follow=True)

    assert "Resolved without resubmitting." in resp.content.decode()
    record.refresh_from_db()
    assert record.status == "ignored" and record.version == 2 and record.completed_at
    entry = AuditEntry.objects.get(record=record)
    assert (entry.actor, entry.action, entry.reason) == (alice, "ignore", "Duplicate of a deal closed by hand")
    assert record.pk not in linked_record_ids(client.get("/exceptions/").content.decode())


@pytest.mark.django_db
def test_a_post_without_a_version_is_refused_with_the_form(client, alice, connections):
    record = held_record(connections)
    client.force_login(alice)
    post = fix_post(record, "resubmit", legal_entity="US01")
    del post["version"]

    resp = client.post(action_url(record), post)

    assert resp.status_code == 400
    assert 'id="fix-form"' in resp.content.decode()
    record.refresh_from_db()
    assert record.status == "held" and record.version == 1


@pytest.mark.django_db
def test_a_viewer_does_not_see_tax_ids_anywhere_on_the_record_or_the_list(client, bob, dave, connections):
    from apps.sync.models import Attempt

    bad, good = "71-4", "71-4624119"
    payload = opportunity_payload()
    payload["account"]["tax_id"] = bad
    erp_says = f"Invalid vatRegNumber: '{bad}' is not a valid tax registration number for country US."
    record = held_record(connections, reason_code="downstream_validation", fault_fields=["account.tax_id"],
                         owner_team="finance_ops", payload=payload, stage="erp_customer",
                         message=f"The ERP refused to create the customer: {erp_says} (field: tax id).")
    SyncRecord.objects.filter(pk=record.pk).update(failed_system="netsuite", system_message=erp_says)
    Attempt.objects.create(record=record, stage="fetch", system="hubspot", method="GET",
                           url="https://crm.example/crm/v3/objects/companies/1", response_status=200,
                           response_excerpt=f'{{"properties": {{"tax_id": "{bad}"}}}}', outcome="ok")
    # a first fix that is still wrong, recorded in the diff and the audit trail
    edited = {**payload, "account": {**payload["account"], "tax_id": good + "0"}}
    SyncRecord.objects.filter(pk=record.pk).update(current_payload=edited)
    AuditEntry.objects.create(actor=bob, record=record, action="edit", before={"account.tax_id": bad},
                              after={"account.tax_id": good + "0"}, reason="typed from the W-9")

    client.force_login(dave)
    page = client.get(record_url(record)).content.decode()
    listing = client.get("/exceptions/").content.decode()
    for html in (page, listing):
        assert bad not in html and good not in html
        assert "•••" in html
    assert "The ERP refused to create the customer: Invalid vatRegNumber: &#x27;•••&#x27;" in page
    assert "netsuite said: “Invalid vatRegNumber" in page  # the rest of the messages still explain the hold
    assert "typed from the W-9" in page

    client.force_login(bob)
    page = client.get(record_url(record)).content.decode()
    assert f"Invalid vatRegNumber: &#x27;{bad}&#x27;" in page
    assert f"&quot;tax_id&quot;: &quot;{bad}&quot;" in page  # the call excerpt
    assert re.search(rf"<td>account.tax_id</td><td>{bad}</td><td>{good}0</td>", page)
    assert bad in client.get("/exceptions/").content.decode()
