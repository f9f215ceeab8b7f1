"""Bulk actions on held records: the preview's counts (would pass / still fail and why / not the user's team / no
longer held), the batched validation (same answers as validate()), a bounded number of queries, the confirm →
RQ job → records changed in chunks with version checks and audit entries, and the console's views."""

from __future__ import annotations

import django_rq
import pytest
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rq import SimpleWorker

from apps.canonical.models import Customer, LegalEntity, PaymentTerms
from apps.canonical.services import external_id_link
from apps.sync import bulk, bulk_checks, bulk_run, desk, wakeup
from apps.sync.desk import NotAllowed
from apps.sync.models import AuditEntry, BulkAction, SyncRecord
from apps.sync.workflows.quote_to_project import validate

from tests.builders import held_records, opportunity_payload as payload
from tests.pages import HTMX


def ids(records) -> list[int]:
    return [r.pk for r in records]


def fresh(user) -> User:
    """The user as a new request would load it (no permission / team caches)."""
    return User.objects.get(pk=user.pk)


@pytest.fixture
def woken(monkeypatch):
    """Wake-ups the bulk job sends, recorded instead of enqueued (so no drain job runs the records on)."""
    kinds = []
    monkeypatch.setattr(wakeup, "enqueue_now", lambda kind: kinds.append(kind) or True)
    return kinds


def run_default_queue() -> None:
    queue = django_rq.get_queue("default")
    SimpleWorker([queue], connection=queue.connection).work(burst=True)


# ---------------------------------------------------------------- preview


def test_preview_counts(connections, alice, bob):
    passing = held_records(connections, 3)
    no_tax = held_records(connections, 2, account={"tax_id": ""})
    wrong_currency = held_records(connections, 1, currency="EUR")  # US01 cannot invoice in EUR
    finance = held_records(connections, 2, team="finance_ops", reason="unknown_billing_terms")
    done = held_records(connections, 1, status="succeeded")
    dead = held_records(connections, 1, status="dead")  # dead letters are actionable too
    selected = ids(passing + no_tax + wrong_currency + finance + done + dead) + [99_999_999, passing[0].pk]

    b = bulk.bulk_preview(actor=alice, action="fix", record_ids=selected, params={"changes": {"legal_entity": "US01"}},
                          filter_query="reason=missing_legal_entity")
    p = b.preview
    assert b.status == "previewed" and b.total == 11 == p["total"]  # the repeated id counts once
    assert b.record_ids == selected[:-1]
    assert b.params == {"changes": {"legal_entity": "US01"}}
    assert b.filter_query == "reason=missing_legal_entity"
    assert p["would_pass"]["count"] == 4 and set(p["would_pass"]["examples"]) == set(ids(passing + dead))
    assert p["still_fail"]["count"] == 3
    reasons = {r["reason"]: r for r in p["still_fail"]["reasons"]}
    assert reasons["missing_tax_profile"]["count"] == 2
    assert set(reasons["missing_tax_profile"]["examples"]) == set(ids(no_tax))
    assert "no tax id" in reasons["missing_tax_profile"]["message"]
    assert reasons["currency_not_enabled"]["count"] == 1
    assert p["still_fail"]["reasons"][0]["reason"] == "missing_tax_profile"  # most frequent first
    assert p["not_allowed"] == {"count": 2, "examples": ids(finance)}
    assert p["not_held"] == {"count": 2, "examples": [done[0].pk, 99_999_999]}
    assert p["allowed"] == 7
    assert set(map(int, p["versions"])) == set(ids(passing + no_tax + wrong_currency + dead))
    # nothing changed
    assert SyncRecord.objects.filter(pk__in=ids(passing), current_payload__legal_entity="").count() == 3
    assert not AuditEntry.objects.exists()

    # finance ops sees the opposite split; nothing passes for them without a fix of the terms
    b2 = bulk.bulk_preview(actor=bob, action="resubmit", record_ids=selected, params={})
    assert b2.preview["not_allowed"]["count"] == 7
    assert b2.preview["allowed"] == 2 and b2.preview["still_fail"]["count"] == 2
    assert b2.preview["still_fail"]["reasons"][0]["reason"] == "missing_legal_entity"


def test_preview_integration_admin_acts_on_every_team(connections, carol):
    records = held_records(connections, 2) + held_records(connections, 2, team="finance_ops")
    b = bulk.bulk_preview(actor=carol, action="assign", record_ids=ids(records), params={"assignee": "carol"})
    assert b.preview["allowed"] == 4 and b.preview["would_pass"]["count"] == 4
    assert b.preview["not_allowed"]["count"] == 0 and b.preview["still_fail"]["count"] == 0
    assert b.params == {"assignee": "carol", "assignee_id": carol.pk}


def test_fetch_stage_not_fetched_is_not_validated(connections, alice):
    """As in record_resubmit: a HubSpot record held before its fetch has no payload to validate yet."""
    [r] = held_records(connections, 1, stage="fetch", reason="source_not_found", account={"tax_id": ""})
    SyncRecord.objects.filter(pk=r.pk).update(context={})
    b = bulk.bulk_preview(actor=alice, action="resubmit", record_ids=[r.pk], params={})
    assert b.preview["would_pass"]["count"] == 1


@pytest.mark.parametrize("action, params, message", [
    ("delete", {}, "Unknown bulk action"),
    ("fix", {"changes": {}}, "Say which field"),
    ("fix", {"changes": {"legal_entity": "   "}}, "Say which field"),
    ("fix", {"changes": {"status": "succeeded"}}, "cannot be set by a fix"),
    ("ignore", {"reason": "  "}, "A reason is required"),
    ("assign", {"assignee": "nobody"}, "no active user"),
    ("assign", {}, "Choose the person"),
])
def test_preview_rejects_bad_parameters(connections, alice, action, params, message):
    records = held_records(connections, 1)
    with pytest.raises(bulk.BulkError, match=message):
        bulk.bulk_preview(actor=alice, action=action, record_ids=ids(records), params=params)
    assert not BulkAction.objects.exists()


def test_preview_needs_a_selection_and_a_role(connections, alice, dave):
    with pytest.raises(bulk.BulkError, match="Select at least one"):
        bulk.bulk_preview(actor=alice, action="resubmit", record_ids=[], params={})
    with pytest.raises(NotAllowed):
        bulk.bulk_preview(actor=dave, action="resubmit", record_ids=ids(held_records(connections, 1)), params={})


def test_actor_scope_is_desk_can_act(connections, alice, bob, carol, dave):
    records = [held_records(connections, 1, team=t)[0] for t in ("pmo", "finance_ops", "integration_admin")]
    for user in (alice, bob, carol, dave):
        scope = desk.actor_scope(fresh(user))
        for r in records:
            assert scope(r.owner_team) == desk.can_act(fresh(user), r), (user.username, r.owner_team)


def test_validate_many_gives_the_same_answers_as_validate(connections):
    northwind = Customer.objects.get(name="Northwind Traders")
    uk = LegalEntity.objects.get(code="UK01")
    other = Customer.objects.create(name="NORTHWIND TRADERS", tax_id="GB123456789", country="GB", currency="GBP",
                                    legal_entity=uk, payment_terms=PaymentTerms.objects.get(code="NET30"))
    # stored as Handoff stores every tax id: normalised (the payloads below say "US-1")
    acme = Customer.objects.create(name="Acme Corp", tax_id="US1", legal_entity=uk)
    external_id_link(obj=acme, system="salesforce", object_type="account", external_id="001-acme")
    dup = {"name": " northwind traders ", "tax_id": "GB123456789 "}
    items = [
        (payload(legal_entity="US01"), "hubspot"),  # valid
        (payload(), "hubspot"),  # missing legal entity
        (payload(legal_entity="XX99"), "hubspot"),  # unknown legal entity
        (payload(legal_entity="US01", currency="EUR"), "hubspot"),  # currency not enabled
        (payload(legal_entity="US01", currency="XYZ"), "hubspot"),  # not a currency
        (payload(legal_entity="US01", billing_terms="NET7"), "hubspot"),
        (payload(legal_entity="US01", amount="-5"), "hubspot"),
        (payload(legal_entity="US01", amount="abc", contract_type="barter"), "hubspot"),
        (payload(legal_entity="US01", account={"name": "", "tax_id": ""}), "hubspot"),
        (payload(legal_entity="UK01", currency="GBP", account=dup), "hubspot"),  # two duplicates
        (payload(legal_entity="UK01", currency="GBP", account={**dup, "id": "northwind-legacy"}),
         "hubspot"),  # its own customer is not a duplicate of itself; the other one is
        (payload(legal_entity="UK01", currency="GBP", account={**dup, "id": "northwind-legacy"}),
         "salesforce"),  # same account id in another system: not its own
        (payload(legal_entity="UK01", currency="GBP", account=dup, duplicate_resolution="new"), "hubspot"),
        (payload(legal_entity="UK01", currency="GBP", account=dup, duplicate_resolution=f"link:{northwind.pk}"),
         "hubspot"),
        (payload(legal_entity="UK01", currency="GBP", account=dup, duplicate_resolution="link:99999999"), "hubspot"),
        (payload(legal_entity="UK01", currency="GBP", account=dup, duplicate_resolution="link:abc"), "hubspot"),
        (payload(legal_entity="UK01", currency="GBP", account={"id": "001-acme", "name": "acme corp",
                                                                "tax_id": "US-1"}), "salesforce"),  # own
        (payload(legal_entity="UK01", currency="GBP", account={"name": "ACME CORP", "tax_id": "US-1"}), "hubspot"),
        (payload(legal_entity="UK01", currency="GBP", account={"name": "Acme Corp", "tax_id": "US-2"}), "hubspot"),
        (payload(account={"tax_id": ""}, billing_terms="", currency=""), "salesforce"),  # several problems
    ]
    batched = bulk_checks.validate_many(items)
    single = [validate(p, source_kind=kind) for p, kind in items]
    assert batched == single
    reasons = [[p.reason for p in probs] for probs in batched]
    assert reasons[0] == [] and reasons[9] == ["duplicate_customer_suspected"]
    assert f"#{northwind.pk}" in batched[9][0].message and f"#{other.pk}" in batched[9][0].message
    assert f"#{northwind.pk}" not in batched[10][0].message
    assert reasons[12] == [] and reasons[13] == [] and reasons[16] == []
    assert reasons[14] == reasons[15] == reasons[17] == ["duplicate_customer_suspected"]


def test_preview_query_count_is_bounded(connections, alice, django_assert_max_num_queries):
    ContentType.objects.get_for_model(Customer)  # the content-type cache, as in a running process

    def mixed(n):
        recs = held_records(connections, n - 10)
        recs += held_records(connections, 5, account={"name": "Northwind Traders", "tax_id": "GB123456789"},
                             legal_entity="UK01", currency="GBP")
        recs += held_records(connections, 3, team="finance_ops")
        recs += held_records(connections, 2, status="succeeded")
        return ids(recs)

    small, large = mixed(50), mixed(500)
    with CaptureQueriesContext(connection) as ctx:
        b = bulk.bulk_preview(actor=fresh(alice), action="fix", record_ids=small,
                              params={"changes": {"legal_entity": "US01"}})
    assert b.preview["still_fail"]["count"] == 5  # the duplicates (and UK01 → US01 leaves GBP not enabled)
    with django_assert_max_num_queries(len(ctx.captured_queries)):
        b = bulk.bulk_preview(actor=fresh(alice), action="fix", record_ids=large,
                              params={"changes": {"legal_entity": "US01"}})
    assert b.preview["would_pass"]["count"] == 490 and b.preview["not_allowed"]["count"] == 3
    assert len(ctx.captured_queries) <= 12


# ---------------------------------------------------------------- confirm and the job


@pytest.mark.django_db(transaction=True)
def test_confirm_runs_the_job_through_rq(connections, alice, carol, woken, monkeypatch):
    monkeypatch.setattr(bulk_run, "RUN_CHUNK", 4)  # several chunks
    plain = held_records(connections, 6)
    past = held_records(connections, 2, stage="erp_customer", reason="downstream_validation")
    same = held_records(connections, 1, stage="erp_customer", reason="downstream_validation", legal_entity="US01")
    no_tax = held_records(connections, 1, account={"tax_id": ""})
    p1 = held_records(connections, 1, priority=1)
    finance = held_records(connections, 1, team="finance_ops")
    selected = ids(plain + past + same + no_tax + p1 + finance)
    b = bulk.bulk_preview(actor=alice, action="fix", record_ids=selected,
                          params={"changes": {"legal_entity": " US01 "}, "note": "all US deals"})
    assert b.preview["would_pass"]["count"] == 10

    # somebody changes a record after the preview: the bulk action must not overwrite it
    changed = plain[0]
    desk.record_assign(record=SyncRecord.objects.get(pk=changed.pk), actor=carol, assignee=carol)
    before = {r.pk: r.version for r in SyncRecord.objects.filter(pk__in=selected)}

    b = bulk.bulk_confirm(bulk=b, actor=alice)
    assert b.status == "queued" and b.rq_job_id
    queue = django_rq.get_queue("default")
    [job] = queue.get_jobs()
    assert job.func_name == "apps.sync.bulk_jobs.run_bulk" and job.args == (b.pk,) and job.kwargs == {}
    run_default_queue()

    b.refresh_from_db()
    assert b.status == "done" and b.completed_at
    assert (b.total, b.done, b.succeeded, b.failed) == (12, 12, 9, 3)
    failures = {f["failed"]: f for f in bulk_run.failures_of(b)}
    assert failures["changed_since_preview"]["count"] == 1
    assert failures["changed_since_preview"]["label"] == "changed since preview"
    assert failures["changed_since_preview"]["examples"] == [changed.pk]
    assert failures["missing_tax_profile"]["examples"] == ids(no_tax)
    assert failures["not_allowed"]["examples"] == ids(finance)
    assert sum(1 for e in b.log if "chunk" in e.get("info", "")) == 3

    went = SyncRecord.objects.filter(pk__in=ids(plain[1:] + past + same + p1))
    assert went.count() == 9
    for r in went:
        assert r.status == "pending" and r.current_payload["legal_entity"] == "US01"
        assert r.version == before[r.pk] + 1 and r.attempts == 0 and r.next_attempt_at is not None
        assert (r.reason_code, r.message, r.fault_fields, r.failed_system, r.error_signature) == \
            ("", "", [], "", "")
        assert r.held_at is not None  # kept: the resolution-time KPI is measured from it
    # a fix that changed fields re-runs from validation when past it; unchanged → from the failed stage
    assert {r.stage for r in went.filter(pk__in=ids(past))} == {"validate"}
    assert SyncRecord.objects.get(pk=same[0].pk).stage == "erp_customer"
    assert {r.stage for r in went.filter(pk__in=ids(plain[1:]))} == {"validate"}
    # skipped records are as they were
    kept = SyncRecord.objects.get(pk=changed.pk)
    assert kept.status == "held" and kept.current_payload["legal_entity"] == "" and kept.assignee == carol
    assert SyncRecord.objects.get(pk=no_tax[0].pk).status == "held"
    assert SyncRecord.objects.get(pk=finance[0].pk).version == before[finance[0].pk]

    audits = AuditEntry.objects.filter(action="bulk_fix")
    assert audits.count() == 9 and {a.actor_id for a in audits} == {alice.pk}
    a = audits.get(record=past[0].pk)
    assert a.before == {"legal_entity": "", "status": "held", "stage": "erp_customer"}
    assert a.after == {"legal_entity": "US01", "status": "pending", "stage": "validate"}
    assert f"bulk #{b.pk}" in a.reason and "all US deals" in a.reason
    assert audits.get(record=same[0].pk).before == {"status": "held", "stage": "erp_customer"}
    # the workers of both priorities were woken
    assert set(woken) == {"records:default", "records:high"}


@pytest.mark.django_db(transaction=True)
def test_job_runs_once_and_records_a_crash(connections, alice, woken, monkeypatch):
    records = held_records(connections, 3)
    # DE01 cannot invoice in USD: nothing would pass, so there is nothing to confirm
    b = bulk.bulk_preview(actor=alice, action="fix", record_ids=ids(records),
                          params={"changes": {"legal_entity": "DE01"}})
    assert b.preview["still_fail"]["reasons"][0]["reason"] == "currency_not_enabled"
    with pytest.raises(bulk.BulkError, match="Nothing to do"):
        bulk.bulk_confirm(bulk=b, actor=alice)

    b = bulk.bulk_preview(actor=alice, action="fix", record_ids=ids(records),
                          params={"changes": {"legal_entity": "US01"}})
    bulk.bulk_confirm(bulk=b, actor=alice)

    def boom(*args, **kwargs):
        raise RuntimeError("database on fire")

    monkeypatch.setattr(bulk_run, "_run_chunk", boom)
    run_default_queue()
    b.refresh_from_db()
    assert b.status == "failed" and b.completed_at
    assert any("database on fire" in e.get("error", "") for e in b.log)
    assert len(django_rq.get_queue("default").failed_job_registry) == 1
    # a second delivery of the job does nothing
    assert bulk_run.bulk_run(b.pk) == {"skipped": True}
    assert SyncRecord.objects.filter(pk__in=ids(records), status="held").count() == 3


def test_only_the_creator_confirms_and_only_once(connections, alice, carol):
    b = bulk.bulk_preview(actor=alice, action="fix", record_ids=ids(held_records(connections, 2)),
                          params={"changes": {"legal_entity": "US01"}})
    with pytest.raises(NotAllowed):
        bulk.bulk_confirm(bulk=b, actor=carol)
    b.refresh_from_db()
    assert b.status == "previewed"
    bulk.bulk_confirm(bulk=b, actor=alice)
    with pytest.raises(bulk.BulkError, match="already confirmed"):
        bulk.bulk_confirm(bulk=b, actor=alice)


def test_confirm_enqueues_after_commit(connections, alice, django_capture_on_commit_callbacks):
    b = bulk.bulk_preview(actor=alice, action="fix", record_ids=ids(held_records(connections, 2)),
                          params={"changes": {"legal_entity": "US01"}})
    queue = django_rq.get_queue("default")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        bulk.bulk_confirm(bulk=b, actor=alice)
    assert queue.count == 0  # not before the commit
    for cb in callbacks:
        cb()
    [job] = queue.get_jobs()
    assert job.id == f"handoff-bulk-{b.pk}" and job.args == (b.pk,)


def test_bulk_assign_and_ignore(connections, alice, carol):
    # carol (integration admin) may act on the PMO records alice assigns her
    records = held_records(connections, 3)
    b = bulk.bulk_preview(actor=alice, action="assign", record_ids=ids(records), params={"assignee": "carol"})
    bulk.bulk_confirm(bulk=b, actor=alice)
    assert bulk_run.bulk_run(b.pk) == {"done": 3, "succeeded": 3, "failed": 0}
    assert set(SyncRecord.objects.filter(pk__in=ids(records)).values_list("assignee__username", "version",
                                                                          "status")) == {("carol", 2, "held")}
    a = AuditEntry.objects.filter(action="bulk_assign").first()
    assert a.before == {"assignee": None} and a.after == {"assignee": "carol"} and f"bulk #{b.pk}" in a.reason

    b = bulk.bulk_preview(actor=alice, action="ignore", record_ids=ids(records), params={"reason": "duplicates"})
    assert b.preview["would_pass"]["count"] == 3
    bulk.bulk_confirm(bulk=b, actor=alice)
    bulk_run.bulk_run(b.pk)
    for r in SyncRecord.objects.filter(pk__in=ids(records)):
        assert r.status == "ignored" and r.completed_at and r.version == 3
    assert AuditEntry.objects.filter(action="bulk_ignore").count() == 3
    assert "duplicates" in AuditEntry.objects.filter(action="bulk_ignore").first().reason


def test_assignee_gone_before_the_run_fails_the_job(connections, alice, carol):
    records = held_records(connections, 2)
    b = bulk.bulk_preview(actor=alice, action="assign", record_ids=ids(records), params={"assignee": "carol"})
    bulk.bulk_confirm(bulk=b, actor=alice)
    User.objects.filter(pk=carol.pk).update(is_active=False)
    with pytest.raises(bulk.BulkError):
        bulk_run.bulk_run(b.pk)
    b.refresh_from_db()
    assert b.status == "failed" and "no longer an active user" in b.log[-1]["error"]
    assert not SyncRecord.objects.filter(assignee__isnull=False).exists()


def test_record_that_left_the_queue_after_the_preview_is_skipped(connections, alice):
    records = held_records(connections, 2)
    b = bulk.bulk_preview(actor=alice, action="ignore", record_ids=ids(records), params={"reason": "spam"})
    SyncRecord.objects.filter(pk=records[0].pk).update(status="pending")  # the engine moved it (no version bump)
    bulk.bulk_confirm(bulk=b, actor=alice)
    assert bulk_run.bulk_run(b.pk) == {"done": 2, "succeeded": 1, "failed": 1}
    b.refresh_from_db()
    assert [f["failed"] for f in bulk_run.failures_of(b)] == ["not_held"]
    assert SyncRecord.objects.get(pk=records[0].pk).status == "pending"


# ---------------------------------------------------------------- views


def test_preview_view_with_ids_then_page(client, connections, alice):
    records = held_records(connections, 3)
    other = held_records(connections, 1, team="finance_ops")
    client.force_login(alice)
    r = client.post("/bulk/preview/", {"action": "fix", "ids": ids(records + other), "fix__legal_entity": "US01",
                                       "fix__currency": "", "filter": "reason=missing_legal_entity&page=3"})
    b = BulkAction.objects.get()
    assert r.status_code == 302 and r.url == f"/bulk/{b.pk}/"
    assert b.actor == alice and b.action == "fix" and b.filter_query == "reason=missing_legal_entity"
    assert b.params == {"changes": {"legal_entity": "US01"}}
    page = client.get(r.url)
    html = page.content.decode()
    assert page.status_code == 200
    assert 'data-testid="count-pass">3<' in html and 'data-testid="count-not-allowed">1<' in html
    assert 'href="/exceptions/?reason=missing_legal_entity"' in html
    assert f'action="/bulk/{b.pk}/confirm/"' in html and 'data-testid="confirm"' in html
    assert f'href="/records/{records[0].pk}/"' in html
    assert "bulk-progress" not in html


def test_preview_view_all_matching_filter(client, connections, alice):
    wanted = held_records(connections, 4, reason="missing_legal_entity")
    held_records(connections, 2, reason="unknown_billing_terms")
    held_records(connections, 1, status="succeeded", reason="missing_legal_entity")
    finance = held_records(connections, 1, team="finance_ops")
    client.force_login(alice)
    r = client.post("/bulk/preview/", {"action": "assign", "assignee": "alice", "all_matching": "1",
                                       "filter": "reason=missing_legal_entity", "ids": ["1"]}, **HTMX)
    b = BulkAction.objects.get()
    assert r.status_code == 200 and r["HX-Redirect"] == f"/bulk/{b.pk}/"
    # the queue's own filter (for a PMO analyst without a team filter: the PMO queue, as the queue showed it)
    assert set(ids(wanted)) <= set(b.record_ids) <= set(ids(wanted + finance))
    assert b.preview["would_pass"]["count"] == 4 and b.filter_query == "reason=missing_legal_entity"


def test_preview_view_still_fail_table(client, connections, alice):
    records = held_records(connections, 2, account={"tax_id": ""})
    client.force_login(alice)
    r = client.post("/bulk/preview/", {"action": "fix", "ids": ids(records), "fix__legal_entity": "US01"},
                    follow=True)
    html = r.content.decode()
    assert 'data-testid="still-fail"' in html and "missing_tax_profile" in html
    assert 'data-testid="confirm"' not in html and "Nothing in this selection would go through" in html


def test_preview_view_bad_request(client, connections, alice):
    client.force_login(alice)
    records = held_records(connections, 1)
    r = client.post("/bulk/preview/", {"action": "assign", "assignee": "mallory", "ids": ids(records),
                                       "filter": "team=pmo"})
    assert r.status_code == 400 and b"no active user" in r.content
    assert b'href="/exceptions/?team=pmo"' in r.content
    assert b'data-testid="bulk-params-form"' in r.content  # asked again
    r = client.post("/bulk/preview/", {"action": "fix", "fix__status": "succeeded", "ids": ids(records)})
    assert r.status_code == 400 and b"cannot be set by a fix" in r.content
    r = client.post("/bulk/preview/", {"action": "resubmit"})
    assert r.status_code == 400 and b"Select at least one record" in r.content
    r = client.post("/bulk/preview/", {"action": "resubmit", "ids": ["12x"]})
    assert r.status_code == 400
    assert not BulkAction.objects.exists()


def test_preview_view_asks_for_the_actions_parameters(client, connections, alice, bob):
    """The queue's bulk bar names only the action: the answer asks for its parameters, keeping the selection."""
    records = held_records(connections, 2)
    client.force_login(alice)
    r = client.post("/bulk/preview/", {"action": "fix", "ids": ids(records), "all_matching": "",
                                       "filter": "reason=missing_legal_entity"})
    html = r.content.decode()
    assert r.status_code == 200 and 'data-testid="bulk-params-form"' in html
    assert all(f'name="ids" value="{pk}"' in html for pk in ids(records))
    assert 'name="fix__legal_entity"' in html and '<option value="US01"' in html
    assert 'name="fix__account__tax_id"' in html and 'name="filter" value="reason=missing_legal_entity"' in html
    assert not BulkAction.objects.exists()

    r = client.post("/bulk/preview/", {"action": "assign", "all_matching": "1", "filter": "reason=x"})
    html = r.content.decode()
    assert 'name="all_matching" value="1"' in html and "<option>bob</option>" in html
    r = client.post("/bulk/preview/", {"action": "ignore", "ids": ids(records), "reason": "  "})
    assert 'name="reason"' in r.content.decode() and r.status_code == 200

    r = client.post("/bulk/preview/", {"action": "fix", "ids": ids(records), "fix__legal_entity": "US01",
                                       "fix__currency": "", "fix__account__tax_id": " 12 34 "})
    b = BulkAction.objects.get()
    assert r.status_code == 302 and b.params["changes"] == {"legal_entity": "US01", "account.tax_id": " 12 34 "}


def test_viewer_gets_403(client, connections, alice, dave):
    records = held_records(connections, 1)
    b = bulk.bulk_preview(actor=alice, action="fix", record_ids=ids(records),
                          params={"changes": {"legal_entity": "US01"}})
    client.force_login(dave)
    assert client.post("/bulk/preview/", {"action": "resubmit", "ids": ids(records)}).status_code == 403
    assert client.get(f"/bulk/{b.pk}/").status_code == 403
    assert client.post(f"/bulk/{b.pk}/confirm/").status_code == 403
    b.refresh_from_db()
    assert b.status == "previewed" and BulkAction.objects.count() == 1


def test_get_on_post_only_urls_is_405(client, connections, alice):
    b = bulk.bulk_preview(actor=alice, action="fix", record_ids=ids(held_records(connections, 1)),
                          params={"changes": {"legal_entity": "US01"}})
    client.force_login(alice)
    assert client.get("/bulk/preview/").status_code == 405
    assert client.get(f"/bulk/{b.pk}/confirm/").status_code == 405
    assert client.post(f"/bulk/{b.pk}/").status_code == 405


def test_csrf_is_required(connections, alice):
    b = bulk.bulk_preview(actor=alice, action="fix", record_ids=ids(held_records(connections, 1)),
                          params={"changes": {"legal_entity": "US01"}})
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(f"/bulk/{b.pk}/confirm/").status_code == 403
    assert client.post("/bulk/preview/", {"action": "resubmit", "ids": [1]}).status_code == 403
    b.refresh_from_db()
    assert b.status == "previewed"


def test_confirm_view_only_creator(client, connections, alice, bob):
    b = bulk.bulk_preview(actor=alice, action="fix", record_ids=ids(held_records(connections, 1)),
                          params={"changes": {"legal_entity": "US01"}})
    client.force_login(bob)
    page = client.get(f"/bulk/{b.pk}/").content.decode()
    assert 'data-testid="confirm"' not in page and "Only alice" in page
    assert client.post(f"/bulk/{b.pk}/confirm/").status_code == 403
    client.force_login(alice)
    r = client.post(f"/bulk/{b.pk}/confirm/")
    assert r.status_code == 302 and r.url == f"/bulk/{b.pk}/"
    b.refresh_from_db()
    assert b.status == "queued"


def test_progress_partial_polls_while_running(client, connections, alice):
    records = held_records(connections, 2)
    b = bulk.bulk_preview(actor=alice, action="fix", record_ids=ids(records),
                          params={"changes": {"legal_entity": "US01"}})
    client.force_login(alice)
    client.post(f"/bulk/{b.pk}/confirm/", **HTMX)
    r = client.get(f"/bulk/{b.pk}/", **HTMX)
    html = r.content.decode()
    assert r.status_code == 200 and "<html" not in html
    assert 'data-testid="bulk-progress"' in html and 'hx-trigger="every 1s"' in html
    assert 'data-status="queued"' in html and '<progress max="2" value="0"' in html
    bulk_run.bulk_run(b.pk)
    with CaptureQueriesContext(connection) as ctx:
        html = client.get(f"/bulk/{b.pk}/", **HTMX).content.decode()
    assert not any('"sync_bulkaction"."preview"' in q["sql"] for q in ctx.captured_queries)  # not polled
    assert 'data-status="done"' in html and "every 1s" not in html  # polling stops
    assert '<progress max="2" value="2"' in html and 'data-testid="succeeded">2<' in html
    full = client.get(f"/bulk/{b.pk}/").content.decode()
    assert "<html" in full and 'data-testid="bulk-progress"' in full and 'data-testid="confirm"' not in full


def test_the_fix_offers_the_fields_of_the_selected_records_workflow(connections, alice, client):
    """A bulk fix of held time entries offers time-to-billing's fix fields, not quote-to-project's, and cannot set
    a field their workflow does not offer."""
    from apps.sync.workflows import time_to_billing

    records = held_records(connections, 2)
    SyncRecord.objects.filter(pk__in=ids(records)).update(workflow="time_to_billing", stage="price")
    client.force_login(alice)
    html = client.post("/bulk/preview/", {"action": "fix", "ids": ids(records)}).content.decode()
    assert 'data-testid="bulk-params-form"' in html
    for path in time_to_billing.FIX_FIELDS:
        assert f'name="fix__{path.replace(".", "__")}"' in html, path
    assert 'name="fix__legal_entity"' not in html and 'name="fix__account__tax_id"' not in html
    with pytest.raises(bulk.BulkError, match="cannot be set by a fix on Time & expense to billing records"):
        bulk.bulk_preview(actor=alice, action="fix", record_ids=ids(records),
                          params={"changes": {"legal_entity": "US01"}})
    assert not BulkAction.objects.exists()
