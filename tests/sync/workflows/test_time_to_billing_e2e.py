"""Time & expense to billing all the way through: Kantata's signed webhooks over HTTP → a real RQ worker →
the NetSuite sandbox over HTTP (timebill and charge records upserted by external id)."""

from __future__ import annotations

from decimal import Decimal

import pytest
import requests

from apps.canonical.models import Engagement, ExternalId
from apps.finance.models import DimensionMapping, ExpenseEntry, TimeEntry
from apps.sandbox.kantata import time_entries as psa
from apps.sandbox.models import SandboxObject
from apps.sync import services
from apps.sync.models import Attempt, InboundEvent, SyncRecord

from tests.worker import inject, run_worker, sandbox_count
from tests.builders import WORKSPACE, time_book

pytestmark = pytest.mark.django_db(transaction=True)

D = Decimal


@pytest.fixture
def book(sandboxes):
    return time_book()


@pytest.fixture
def kantata(live_server, book):
    """Kantata publishing to Handoff (the live server)."""
    session = requests.Session()

    def send(event_type, data, **kw):
        return psa.publish(event_type, data, handoff_url=live_server.url, session=session, **kw)

    return send


def entry(entry_id, *, minutes=480, role="Consultant", service_code="CONSULT", day="2026-11-02",
          updated_at="2026-11-03T09:00:00Z", workspace=WORKSPACE, **kw):
    return psa.time_entry(entry_id, workspace, date_performed=day, minutes=minutes, role=role,
                               service_code=service_code, updated_at=updated_at, **kw)


def timebill(entry_id) -> SandboxObject:
    return SandboxObject.objects.get(system="netsuite", object_type="timebill", external_key=f"HO-TE-{entry_id}")


def record(key) -> SyncRecord:
    return SyncRecord.objects.get(source_key=key)


def test_approved_time_and_an_expense_are_priced_and_posted_once_each(kantata):
    for i, (minutes, role) in enumerate([(480, "Consultant"), (450, "Senior Consultant"), (45, "Partner")], 1):
        [r] = kantata("time_entry.approved", entry(i, minutes=minutes, role=role))
        assert r.status_code == 202
    [r] = kantata("expense.approved", psa.expense(
        77, WORKSPACE, date_spent="2026-10-15", amount_in_cents=10000, currency="EUR", category="Travel",
        service_code="EXP", updated_at="2026-11-03T09:00:00Z"))
    assert r.status_code == 202

    run_worker()

    assert set(SyncRecord.objects.values_list("status", flat=True)) == {"succeeded"}
    assert sandbox_count("netsuite", "timebill") == 3 and sandbox_count("netsuite", "charge") == 1
    # 8 h × 150.00; 7.5 h × 200.00; 45 min × 350.15 = 262.6125 → 262.61; 100.00 EUR × 1.08 (2026-10-01)
    amounts = dict(TimeEntry.objects.values_list("source_id", "amount"))
    assert amounts == {"1": D("1200.00"), "2": D("1500.00"), "3": D("262.61")}
    assert ExpenseEntry.objects.get().amount == D("108.00")
    assert set(TimeEntry.objects.values_list("status", flat=True)) == {"posted"}
    assert not TimeEntry.objects.filter(posted_at=None).exists()
    tb = timebill(3).data
    assert (tb["hours"], tb["rate"], tb["isBillable"], tb["department"], tb["class"], tb["location"]) == (
        "0:45", "350.15", True, {"id": "10"}, {"id": "1"}, {"id": "1"})
    assert tb["item"] == {"id": "100"} and tb["subsidiary"] == {"id": "1"}
    assert tb["customer"] == {"externalId": f"HO-{Engagement.objects.get(code='ENG-TM').key}"}
    charge = SandboxObject.objects.get(system="netsuite", object_type="charge", external_key="HO-EX-77").data
    assert (charge["amount"], charge["stage"], charge["billingItem"]) == ("108.00", "READY_FOR_BILLING", {"id": "200"})
    # the canonical entries are linked to their NetSuite ids, and the record knows them too
    t1 = TimeEntry.objects.get(source_id="1")
    link = ExternalId.objects.get(system="netsuite", object_type="timebill", object_id=t1.pk)
    assert link.external_id == str(timebill(1).pk) == record("time_entry:1").context["erp_record_id"]
    assert record("time_entry:1").amount == D("1200.00") and record("time_entry:1").priority == 1
    # two stages, one ERP call per entry
    assert Attempt.objects.filter(system="netsuite").count() == 4


def test_redelivery_and_out_of_order_updates_do_not_change_the_result(kantata):
    v1 = entry(1, minutes=480, updated_at="2026-11-03T09:00:00Z")
    v2 = entry(1, minutes=240, updated_at="2026-11-03T10:00:00Z")
    responses = kantata("time_entry.approved", v1, times=3)
    assert [r.status_code for r in responses] == [202, 200, 200]
    run_worker()
    assert timebill(1).writes == 1 and InboundEvent.objects.get().deliveries == 3

    kantata("time_entry.updated", v2)
    run_worker()
    kantata("time_entry.updated", v1)  # the older version arrives late (a retry from the PSA)
    run_worker()

    assert sandbox_count("netsuite", "timebill") == 1 and SyncRecord.objects.count() == 1
    assert (timebill(1).writes, timebill(1).data["hours"]) == (2, "4:00")
    assert TimeEntry.objects.get().amount == D("600.00")
    assert record("time_entry:1").current_payload["minutes"] == 240


def test_two_versions_delivered_before_the_worker_runs_keep_the_newest(kantata):
    kantata("time_entry.updated", entry(1, minutes=240, updated_at="2026-11-03T10:00:00Z"))
    kantata("time_entry.approved", entry(1, minutes=480, updated_at="2026-11-03T09:00:00Z"))
    run_worker()
    assert (timebill(1).writes, timebill(1).data["hours"]) == (1, "4:00")
    assert TimeEntry.objects.get().amount == D("600.00")


def test_a_correction_after_posting_updates_the_same_erp_line_and_the_canonical_amount(kantata):
    kantata("time_entry.approved", entry(1, minutes=480))
    run_worker()
    posted_id = timebill(1).pk
    assert TimeEntry.objects.get().amount == D("1200.00")

    kantata("time_entry.updated", entry(1, minutes=300, role="Senior Consultant", updated_at="2026-11-04T09:00:00Z"))
    run_worker()

    assert sandbox_count("netsuite", "timebill") == 1
    tb = timebill(1)
    assert (tb.pk, tb.writes, tb.data["hours"], tb.data["rate"]) == (posted_id, 2, "5:00", "200.00")
    te = TimeEntry.objects.get()
    assert (te.amount, te.role, te.status, te.source_version) == (
        D("1000.00"), "Senior Consultant", "posted", "2026-11-04T09:00:00.000000Z")
    assert record("time_entry:1").status == "succeeded"


def test_an_unapproved_entry_is_zeroed_in_the_erp_and_a_re_approval_brings_it_back(kantata):
    kantata("time_entry.approved", entry(1, minutes=480))
    kantata("expense.approved", psa.expense(5, WORKSPACE, date_spent="2026-11-02", amount_in_cents=4550,
                                                 currency="USD", category="Meals", service_code="EXP",
                                                 updated_at="2026-11-03T09:00:00Z"))
    run_worker()

    kantata("time_entry.unapproved", entry(1, minutes=480, approved=False, updated_at="2026-11-04T09:00:00Z"),
            timestamp="2026-11-04T09:00:01Z")
    kantata("expense.deleted", {"id": "5"}, event_id="del-5", timestamp="2026-11-04T09:30:00Z")
    run_worker()

    tb = timebill(1).data
    assert (tb["hours"], tb["isBillable"], tb["custcol_ho_amount"]) == ("0:00", False, "0.00")
    assert tb["memo"].startswith("Reversed in the PSA")
    te = TimeEntry.objects.get()
    assert (te.status, te.amount) == ("reversed", D("0"))
    charge = SandboxObject.objects.get(system="netsuite", object_type="charge", external_key="HO-EX-5").data
    assert (charge["stage"], charge["amount"]) == ("NON_BILLABLE", "0.00")
    assert ExpenseEntry.objects.get().status == "reversed"
    assert sandbox_count("netsuite", "timebill") == 1 and sandbox_count("netsuite", "charge") == 1

    kantata("time_entry.approved", entry(1, minutes=420, updated_at="2026-11-05T09:00:00Z"))
    run_worker()
    tb = timebill(1).data
    assert (tb["hours"], tb["isBillable"], tb["custcol_ho_amount"]) == ("7:00", True, "1050.00")
    assert (TimeEntry.objects.get().status, TimeEntry.objects.get().amount) == ("posted", D("1050.00"))
    assert sandbox_count("netsuite", "timebill") == 1


def test_withdrawing_an_entry_that_was_never_posted_writes_nothing(kantata):
    kantata("time_entry.deleted", {"id": "404"})
    run_worker()
    r = record("time_entry:404")
    assert r.status == "succeeded" and r.context["erp_action"] == "nothing posted"
    assert sandbox_count("netsuite", "timebill") == 0 and TimeEntry.objects.count() == 0


def _hold_setup(case, book):
    eng = book.engagement
    if case == "project_closed":
        Engagement.objects.filter(pk=eng.pk).update(status="closed")
    elif case == "tm_cap_exceeded":
        Engagement.objects.filter(pk=eng.pk).update(tm_cap=D("1000.00"))
    elif case == "downstream_validation":  # a mapping to a department NetSuite does not have
        DimensionMapping.objects.filter(service_code="CONSULT").update(department_id="999")


@pytest.mark.parametrize("case, data, fields", [
    ("unknown_project", {"workspace": "9999"}, ["engagement_code"]),
    ("project_closed", {}, ["engagement_code"]),
    ("unknown_rate_card_role", {"role": "Astronaut"}, ["role"]),
    ("entry_outside_engagement_dates", {"day": "2027-02-01"}, ["date"]),
    ("tm_cap_exceeded", {"minutes": 480}, ["cap_decision", "write_off_minutes"]),
    ("missing_dimension_mapping", {"service_code": "UNMAPPED"}, ["service_code"]),
    ("downstream_validation", {}, ["service_code"]),
])
def test_each_hold_reason_stops_the_entry_before_anything_is_half_posted(kantata, book, case, data, fields):
    _hold_setup(case, book)
    kantata("time_entry.approved", entry(1, **data))
    run_worker()

    r = record("time_entry:1")
    assert (r.status, r.reason_code, sorted(r.fault_fields)) == ("held", case, fields), r.message
    assert r.message and r.priority == 1
    assert sandbox_count("netsuite", "timebill") == 0
    if case == "downstream_validation":
        assert (r.stage, r.failed_system, r.owner_team) == ("erp_post", "netsuite", "finance_ops")
        assert "Invalid department reference key 999" in r.message and "department" in r.message
        assert TimeEntry.objects.get().status == "priced"  # priced, never posted
    else:
        assert r.stage == "price" and TimeEntry.objects.count() == 0


def test_an_expense_in_a_currency_without_an_erp_rate_is_held(kantata):
    kantata("expense.approved", psa.expense(9, WORKSPACE, date_spent="2026-11-02", amount_in_cents=20000,
                                                 currency="CHF", category="Hotel", service_code="EXP"))
    run_worker()
    r = record("expense:9")
    assert (r.status, r.reason_code, r.fault_fields, r.owner_team) == (
        "held", "missing_exchange_rate", ["currency"], "finance_ops")
    assert (r.amount, r.currency) == (D("200.00"), "CHF")  # at risk, as spent
    assert sandbox_count("netsuite", "charge") == 0


def test_a_transient_netsuite_failure_is_retried_and_posts_once(kantata):
    inject("netsuite", fail_next_count=2, fail_next_status=503)
    kantata("time_entry.approved", entry(1))
    run_worker()

    r = record("time_entry:1")
    assert r.status == "succeeded", r.message
    outcomes = list(Attempt.objects.filter(record=r, system="netsuite").values_list("outcome", flat=True))
    assert outcomes.count("transient") == 2 and outcomes.count("ok") == 1
    assert sandbox_count("netsuite", "timebill") == 1 and timebill(1).writes == 1


def test_a_held_unknown_role_is_fixed_by_the_pmo_and_goes_through(kantata, alice):
    kantata("time_entry.approved", entry(1, role="Consultant (Senior)"))
    run_worker()
    r = record("time_entry:1")
    assert (r.reason_code, r.owner_team) == ("unknown_rate_card_role", "pmo")

    services.record_resubmit(record_id=r.pk, actor=alice, expected_version=r.version,
                             changes={"role": "Senior Consultant"}, reason="PSA role name differs from the SOW")
    run_worker()

    r.refresh_from_db()
    assert r.status == "succeeded", r.message
    assert (r.current_payload["role"], r.original_payload["role"]) == ("Senior Consultant", "Consultant (Senior)")
    assert sandbox_count("netsuite", "timebill") == 1 and timebill(1).data["rate"] == "200.00"
    assert TimeEntry.objects.get().amount == D("1600.00")


def test_finance_ops_bills_a_capped_line_anyway(kantata, book, bob):
    Engagement.objects.filter(pk=book.engagement.pk).update(tm_cap=D("1000.00"))
    kantata("time_entry.approved", entry(1, minutes=480))
    run_worker()
    r = record("time_entry:1")
    assert (r.reason_code, r.owner_team) == ("tm_cap_exceeded", "finance_ops")

    services.record_resubmit(record_id=r.pk, actor=bob, expected_version=r.version,
                             changes={"cap_decision": "bill_anyway"}, reason="client approved the overrun")
    run_worker()
    r.refresh_from_db()
    assert r.status == "succeeded" and timebill(1).data["custcol_ho_amount"] == "1200.00"


def test_a_corrected_mapping_is_picked_up_by_a_plain_resubmit(kantata, bob):
    DimensionMapping.objects.filter(service_code="CONSULT").update(department_id="999")
    kantata("time_entry.approved", entry(1))
    run_worker()
    r = record("time_entry:1")
    assert r.reason_code == "downstream_validation"

    DimensionMapping.objects.filter(service_code="CONSULT").update(department_id="20")
    services.record_resubmit(record_id=r.pk, actor=bob, expected_version=r.version)
    run_worker()
    r.refresh_from_db()
    assert r.status == "succeeded" and timebill(1).data["department"] == {"id": "20"}


def test_the_psa_lists_what_it_published(kantata, sandboxes, live_server):
    kantata("time_entry.approved", entry(1))
    kantata("time_entry.approved", entry(2, workspace="7002"))
    r = requests.get(f"{live_server.url}/sandbox/kantata/api/v1/time_entries.json", params={"workspace_id": WORKSPACE},
                     headers={"Authorization": "Bearer sandbox-kantata-token"}, timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["count"] == 1 and body["results"] == [{"key": "time_entries", "id": "1"}]
    assert body["time_entries"]["1"]["time_in_minutes"] == 480
