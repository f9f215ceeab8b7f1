"""Invoices and payments back to the CRM: the state-ordering rule, days overdue, the NetSuite callback's
verification, holds, and end to end through a real worker against the sandboxes over HTTP — Stripe's
finalized → paid → late finalized (stays paid), payment failed, dispute; NetSuite invoice and payments (partial,
full, out of order) to HubSpot and Salesforce."""

from __future__ import annotations

import json
import time
from datetime import date, datetime, timedelta, timezone as dt_tz
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.connectors.base import DownstreamError
from apps.connectors.stripe.client import StripeClient
from apps.finance import invoicing
from apps.finance.invoicing import InvoiceState, InvoiceView, supersedes
from apps.finance.models import Invoice, Payment
from apps.sandbox import callbacks
from apps.sandbox.models import SandboxObject
from apps.sandbox.netsuite import invoices as netsuite_invoices
from apps.sandbox.stripe import webhooks as stripe_webhooks
from apps.sync import services
from apps.sync.intake import process_inbox
from apps.sync.models import Attempt, Connection, InboundEvent, SyncRecord
from apps.finance.services import apply_invoice_state

from tests.worker import inject, run_worker
from tests.builders import linked_engagement, story
from tests.callbacks import post_netsuite

D = Decimal
T0 = datetime(2026, 11, 20, 10, 0, 0, tzinfo=dt_tz.utc)


# ------------------------------------------------------------------ the state-ordering rule (pure)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_newer_state_replaces_an_older_one():
    assert supersedes(InvoiceState("paid", at(10)), InvoiceState("open", at(0)))
    assert supersedes(InvoiceState("disputed", at(20)), InvoiceState("paid", at(10)))
    assert supersedes(InvoiceState("open", at(0)), None)


def test_an_older_state_never_replaces_a_newer_one():
    # the finalized (open) event arrives after the paid one: the invoice stays paid
    assert not supersedes(InvoiceState("open", at(0)), InvoiceState("paid", at(10)))
    assert not supersedes(InvoiceState("payment_failed", at(5)), InvoiceState("paid", at(10)))


def test_at_the_same_time_the_later_state_wins():
    # Stripe finalizes and charges within the same second
    assert supersedes(InvoiceState("paid", at(0)), InvoiceState("open", at(0)))
    assert not supersedes(InvoiceState("open", at(0)), InvoiceState("paid", at(0)))
    assert supersedes(InvoiceState("paid", at(0)), InvoiceState("payment_failed", at(0)))
    # a dispute is only raised on a paid charge: at the same second it is the later state
    assert supersedes(InvoiceState("disputed", at(0)), InvoiceState("paid", at(0)))
    assert not supersedes(InvoiceState("paid", at(0)), InvoiceState("disputed", at(0)))
    # the same state again (a duplicate) changes nothing but is harmless
    assert supersedes(InvoiceState("paid", at(0)), InvoiceState("paid", at(0)))


def test_void_is_final():
    assert not supersedes(InvoiceState("paid", at(99)), InvoiceState("void", at(0)))


def test_the_records_version_text_orders_like_the_rule():
    pairs = [("open", 0), ("payment_failed", 0), ("paid", 0), ("disputed", 0), ("open", 1), ("paid", 1)]
    texts = [invoicing.state_version(s, at(t)) for s, t in pairs]
    assert texts == sorted(texts)
    for (s1, t1), (s2, t2) in zip(pairs, pairs[1:]):
        assert supersedes(InvoiceState(s2, at(t2)), InvoiceState(s1, at(t1)))


def test_days_overdue_counts_whole_days_past_due_while_money_is_open():
    today = date(2026, 11, 23)
    assert invoicing.days_overdue(date(2026, 11, 1), today, "open", D("10.00")) == 22
    assert invoicing.days_overdue(date(2026, 11, 23), today, "open", D("10.00")) == 0
    assert invoicing.days_overdue(date(2026, 12, 1), today, "open", D("10.00")) == 0
    assert invoicing.days_overdue(date(2026, 11, 1), today, "paid", D("0.00")) == 0
    assert invoicing.days_overdue(date(2026, 11, 1), today, "payment_failed", D("5.00")) == 22
    assert invoicing.days_overdue(None, today, "open", D("5.00")) == 0


def test_standing_sums_open_amounts_per_currency_and_shows_the_worst():
    today = date(2026, 11, 23)
    st = invoicing.standing([
        InvoiceView("paid", "USD", D("0.00"), date(2026, 10, 1)),
        InvoiceView("open", "USD", D("1200.50"), date(2026, 11, 13)),
        InvoiceView("open", "USD", D("99.50"), date(2026, 12, 13)),
        InvoiceView("open", "EUR", D("10.00"), date(2026, 12, 13)),
        InvoiceView("void", "USD", D("5000.00"), date(2026, 1, 1)),
    ], today)
    assert st.open_amounts == {"USD": D("1300.00"), "EUR": D("10.00")}
    assert (st.max_days_overdue, st.payment_status, st.open_invoices) == (10, "overdue", 3)
    assert st.open_amount_text("USD") == "1300.00 USD; 10.00 EUR"
    assert invoicing.standing([InvoiceView("paid", "USD", D("0"), None)], today).payment_status == "paid"
    assert invoicing.standing([InvoiceView("disputed", "USD", D("0"), None),
                               InvoiceView("payment_failed", "USD", D("1"), None)], today).payment_status == "disputed"
    assert invoicing.standing([], today).open_amount_text("GBP") == "0.00 GBP"


def test_the_canonical_invoice_keeps_the_newest_state(firm):
    e = linked_engagement(crm=None, in_erp=False)
    view = {"id": "in_1", "number": "A-0001", "currency": "USD", "total": "100.00", "amount_paid": "100.00",
            "amount_due": "0.00"}
    inv, applied = apply_invoice_state(source_system="stripe", source_role="billing", external_id="in_1",
                                       status="paid", at=at(10), view=view, customer=e.customer, engagement=e)
    assert applied and inv.status == "paid"
    # the older finalized state arrives late: status and amounts stay; the number, blank before, is kept
    inv, applied = apply_invoice_state(source_system="stripe", source_role="billing", external_id="in_1",
                                       status="open", at=at(0), view={**view, "amount_paid": "0.00",
                                                                      "amount_due": "100.00"})
    inv.refresh_from_db()
    assert not applied and (inv.status, inv.amount_due, inv.amount_paid) == ("paid", D("0.00"), D("100.00"))
    assert Invoice.objects.count() == 1
    from apps.canonical.ownership import NotSystemOfRecord

    with pytest.raises(NotSystemOfRecord):  # the CRM is not the system of record for invoices
        apply_invoice_state(source_system="stripe", source_role="crm", external_id="in_1", status="open",
                            at=at(20), view=view)


# ------------------------------------------------------------------ the NetSuite callback (Standard Webhooks)


def ns_invoice(**over) -> dict:
    rec = {"id": "501", "tranId": "INV10501", "externalId": "", "entity": {"id": "77"}, "currency": {"refName": "USD"},
           "total": "1500.00", "amountPaid": "0.00", "amountRemaining": "1500.00",
           "status": {"id": "open", "refName": "Open"}, "tranDate": "2026-11-01", "dueDate": "2026-12-01",
           "lastModifiedDate": "2026-11-20T10:00:00Z"}
    rec.update(over)
    return rec


def test_a_signed_netsuite_invoice_callback_is_stored_once(connections, api):
    env = {"type": "invoice.updated", "timestamp": "2026-11-20T10:00:01Z", "data": ns_invoice()}
    assert post_netsuite(api, env, msg_id="msg_ns_1").status_code == 202
    assert post_netsuite(api, env, msg_id="msg_ns_1").status_code == 200  # the same webhook-id again: a duplicate
    process_inbox()
    ev = InboundEvent.objects.get()
    assert (ev.deliveries, ev.status) == (2, "processed")
    rec = SyncRecord.objects.get()
    assert (rec.workflow, rec.source_key, rec.priority) == ("invoice_payment_to_crm", "invoice:501", 1)
    assert rec.current_payload["invoices"][0]["amount_due"] == "1500.00"


@pytest.mark.parametrize("kind, expect", [
    ("bad_signature", (401, "bad signature")),
    ("stale", (401, "stale timestamp")),
    ("missing", (401, "missing webhook-id")),
    ("malformed", (400, "malformed JSON")),
    ("not_json", (415, "application/json")),
    ("no_data", (400, '"data" object')),
    ("no_currency", (400, "currency or total")),
    ("payment_unapplied", (400, "applied to no invoice")),
])
def test_a_bad_netsuite_callback_is_refused_with_its_reason(connections, api, kind, expect):
    env = {"type": "invoice.created", "timestamp": "2026-11-20T10:00:00Z", "data": ns_invoice()}
    kw = {}
    if kind == "bad_signature":
        kw["secret"] = "someone-else"
    elif kind == "stale":
        kw["ts"] = int(time.time()) - 301
    elif kind == "missing":
        kw["sig"] = ""
    elif kind == "malformed":
        kw["raw"] = b'{"type": "invoice.created", "data": {'
    elif kind == "not_json":
        kw["content_type"] = "text/plain"
    elif kind == "no_data":
        env = {"type": "invoice.created"}
    elif kind == "no_currency":
        env["data"] = ns_invoice(currency=None)
    elif kind == "payment_unapplied":
        env = {"type": "customerpayment.created", "data": {"id": "9", "payment": "10", "apply": {"items": []},
                                                           "lastModifiedDate": "2026-11-20T10:00:00Z"}}
    r = post_netsuite(api, kw.pop("raw", env), **kw)
    status, words = expect
    assert r.status_code == status, r.content
    assert words in json.loads(r.content)["error"]
    ev = InboundEvent.objects.get()
    assert ev.status == "rejected" and words in ev.reason
    assert not SyncRecord.objects.exists()


def test_other_netsuite_callbacks_are_stored_as_ignored(connections, api):
    r = post_netsuite(api, {"type": "salesorder.created", "data": {"id": "1"}})
    assert r.status_code == 200 and InboundEvent.objects.get().status == "ignored"


def test_an_invoice_of_an_unknown_customer_is_held_then_fixed_by_naming_the_engagement(connections, api, bob):
    e = linked_engagement(crm=None)
    post_netsuite(api, {"type": "invoice.created", "data": ns_invoice(entity={"id": "999999"})})
    process_inbox()
    from apps.sync import engine

    engine.drain("high")
    rec = SyncRecord.objects.get()
    assert (rec.status, rec.reason_code, rec.owner_team) == ("held", "unknown_customer", "finance_ops")
    assert rec.fault_fields == ["engagement_code"] and "999999" in rec.message
    with pytest.raises(services.StillInvalid):
        services.record_resubmit(record_id=rec.pk, actor=bob, expected_version=rec.version,
                                 changes={"engagement_code": "ENG-999999"})
    services.record_resubmit(record_id=rec.pk, actor=bob, expected_version=rec.version,
                             changes={"engagement_code": e.code})
    engine.drain("high")
    rec.refresh_from_db()
    assert rec.status == "succeeded", rec.message
    inv = Invoice.objects.get()
    assert (inv.engagement, inv.customer, inv.status, inv.amount_due) == (e, e.customer, "open", D("1500.00"))
    assert rec.context["note"].startswith("no CRM")


# ------------------------------------------------------------------ end to end


@pytest.fixture
def live(sandboxes, live_server):
    for system in ("netsuite", "kantata"):
        callbacks.configure_callbacks(system, url=f"{live_server.url}/api/v1/callbacks/{system}/")
    stripe_webhooks.configure_webhooks(url=f"{live_server.url}/api/v1/callbacks/stripe/")
    return sandboxes


def stripe_client() -> StripeClient:
    return StripeClient(Connection.objects.get(slug="stripe"))


def deal(obj_type="deals") -> dict:
    return SandboxObject.objects.get(system="hubspot", object_type=obj_type).data["properties"]


def invoice_milestone(e, amount="5000.00") -> Invoice:
    """A milestone completed in the PSA and invoiced by milestone-to-invoice (through the worker)."""
    callbacks.send_callback("story.completed", story(e, amount=amount), system="kantata")
    run_worker()
    rec = SyncRecord.objects.get(workflow="milestone_to_invoice")
    assert rec.status == "succeeded", rec.message
    return Invoice.objects.get(milestone__isnull=False)


def test_stripe_paid_then_a_late_finalized_event_leaves_the_invoice_paid(live):
    e = linked_engagement(channel="stripe")
    stripe_webhooks.configure_webhooks(mode="hold")  # Stripe's deliveries are late and out of order in this test
    inv = invoice_milestone(e, "5000.00")
    assert inv.status == "open" and not SyncRecord.objects.filter(workflow="invoice_payment_to_crm").exists()
    paid = stripe_client().pay_invoice(inv.external_id, idempotency_key="pay-1")
    assert paid["status"] == "paid"
    [finalized] = stripe_webhooks.events_for(inv.external_id, "invoice.finalized")
    [paid_event] = stripe_webhooks.events_for(inv.external_id, "invoice.paid")

    stripe_webhooks.deliver_event(paid_event["id"])  # invoice.paid first
    run_worker()
    inv.refresh_from_db()
    assert (inv.status, inv.amount_due, inv.amount_paid) == ("paid", D("0.00"), D("5000.00"))
    [payment] = Payment.objects.all()
    assert payment.external_id.startswith("pi_") and payment.amount == D("5000.00")
    assert (deal()["handoff_invoice_status"], deal()["handoff_open_amount"]) == ("paid", "0.00")
    assert deal("companies")["handoff_payment_status"] == "paid"
    rec = SyncRecord.objects.get(workflow="invoice_payment_to_crm")
    assert rec.status == "succeeded"
    writes = SandboxObject.objects.get(system="hubspot", object_type="deals").writes

    stripe_webhooks.deliver_event(finalized["id"])  # …then the older invoice.finalized, late
    stripe_webhooks.deliver_event(paid_event["id"])  # and a redelivery of invoice.paid
    run_worker()
    inv.refresh_from_db()
    assert inv.status == "paid" and inv.amount_due == D("0.00")
    assert (deal()["handoff_invoice_status"], deal()["handoff_open_amount"]) == ("paid", "0.00")
    assert SandboxObject.objects.get(system="hubspot", object_type="deals").writes == writes  # nothing re-sent
    assert InboundEvent.objects.get(event_id=paid_event["id"]).deliveries == 2
    assert SyncRecord.objects.filter(workflow="invoice_payment_to_crm").count() == 1
    assert Payment.objects.count() == 1


def test_stripe_payment_failed_then_paid(live):
    e = linked_engagement(channel="stripe", crm="salesforce")
    inv = invoice_milestone(e, "750.25")
    with pytest.raises(DownstreamError) as exc:
        stripe_client().pay_invoice(inv.external_id, idempotency_key="pay-declined",
                                    payment_method="pm_card_chargeDeclined")
    assert (exc.value.permanent, exc.value.status, exc.value.code) == (True, 402, "card_declined")
    run_worker()
    inv.refresh_from_db()
    assert (inv.status, inv.amount_due) == ("payment_failed", D("750.25"))
    opp = SandboxObject.objects.get(system="salesforce", object_type="Opportunity").data["fields"]
    assert (opp["Invoice_Status__c"], opp["Open_Amount__c"], opp["Payment_Status__c"]) == (
        "payment_failed", "750.25", "payment_failed")
    acc = SandboxObject.objects.get(system="salesforce", object_type="Account").data["fields"]
    assert acc["Open_Invoice_Amount__c"] == "750.25" and acc["Open_Invoices__c"] == 1

    stripe_client().pay_invoice(inv.external_id, idempotency_key="pay-2", payment_method="pm_card_visa")
    run_worker()
    inv.refresh_from_db()
    assert (inv.status, inv.amount_due) == ("paid", D("0.00"))
    opp = SandboxObject.objects.get(system="salesforce", object_type="Opportunity").data["fields"]
    assert (opp["Invoice_Status__c"], opp["Open_Amount__c"], opp["Payment_Status__c"]) == ("paid", "0.00", "paid")


def test_a_stripe_dispute_marks_the_invoice_disputed_for_finance_ops(live):
    e = linked_engagement(channel="stripe")
    inv = invoice_milestone(e, "1200.00")
    stripe_client().pay_invoice(inv.external_id, idempotency_key="pay-d", payment_method="pm_card_createDispute")
    run_worker()
    inv.refresh_from_db()
    assert inv.status == "disputed"
    dispute = SyncRecord.objects.get(workflow="invoice_payment_to_crm", source_key__startswith="dispute:")
    assert dispute.status == "succeeded" and dispute.owner_team == "finance_ops"
    assert dispute.context["invoice_ids"] == [inv.pk]
    assert deal()["handoff_invoice_status"] == "disputed"
    assert deal("companies")["handoff_payment_status"] == "disputed"
    # the paid event, redelivered or late, does not undo the dispute
    [paid_event] = stripe_webhooks.events_for(inv.external_id, "invoice.paid")
    stripe_webhooks.deliver_event(paid_event["id"])
    run_worker()
    inv.refresh_from_db()
    assert inv.status == "disputed"


def test_netsuite_payments_partial_then_full_reach_the_salesforce_opportunity(live):
    e = linked_engagement(crm="salesforce", contract_value="50000.00")
    inv = invoice_milestone(e, "10000.00")
    opp = lambda: SandboxObject.objects.get(system="salesforce", object_type="Opportunity").data["fields"]  # noqa
    assert (opp()["Invoice_Status__c"], opp()["Open_Amount__c"]) == ("open", "10000.00")

    netsuite_invoices.pay_invoice(inv.external_id, "4000.00")
    run_worker()
    inv.refresh_from_db()
    assert (inv.status, inv.amount_paid, inv.amount_due) == ("open", D("4000.00"), D("6000.00"))
    assert opp()["Open_Amount__c"] == "6000.00"

    netsuite_invoices.pay_invoice(inv.external_id)  # the rest
    run_worker()
    inv.refresh_from_db()
    assert (inv.status, inv.amount_paid, inv.amount_due) == ("paid", D("10000.00"), D("0.00"))
    assert (opp()["Invoice_Status__c"], opp()["Open_Amount__c"], opp()["Days_Overdue__c"]) == ("paid", "0.00", 0)
    assert sorted(Payment.objects.values_list("amount", flat=True)) == [D("4000.00"), D("6000.00")]
    assert all(SyncRecord.objects.filter(workflow="invoice_payment_to_crm").values_list("status", flat=True))
    assert set(SyncRecord.objects.filter(workflow="invoice_payment_to_crm").values_list("status", flat=True)) == {
        "succeeded"}


def test_netsuite_events_out_of_order_leave_the_invoice_paid(live):
    e = linked_engagement()
    callbacks.configure_callbacks("netsuite", mode="hold")
    inv = invoice_milestone(e, "800.00")
    netsuite_invoices.pay_invoice(inv.external_id)
    created, payment, updated = callbacks.held_callbacks("netsuite")
    assert [created["envelope"]["type"], payment["envelope"]["type"], updated["envelope"]["type"]] == [
        "invoice.created", "customerpayment.created", "invoice.updated"]
    for msg in (updated, payment, created):  # newest first, the invoice's creation last
        callbacks.deliver_callback(msg["id"])
    run_worker()
    inv.refresh_from_db()
    assert (inv.status, inv.amount_due) == ("paid", D("0.00"))
    assert (deal()["handoff_invoice_status"], deal()["handoff_open_amount"]) == ("paid", "0.00")
    assert Payment.objects.get().external_id == f"{payment['envelope']['data']['id']}:{inv.external_id}"


def test_days_overdue_are_computed_from_the_due_date_and_today(live):
    e = linked_engagement()
    ns_customer = SandboxObject.objects.get(system="netsuite", object_type="customer")
    due = timezone.localdate() - timedelta(days=12)
    netsuite_invoices.upsert_invoice("OLD-1", {  # an invoice entered in the ERP, long due
        "entity": {"id": str(ns_customer.pk)}, "subsidiary": {"id": "1"}, "currency": {"refName": "USD"},
        "tranDate": (due - timedelta(days=30)).isoformat(), "dueDate": due.isoformat(),
        "job": {"id": SandboxObject.objects.get(system="netsuite", object_type="job").pk},
        "item": {"items": [{"description": "Phase 0", "quantity": 1, "rate": "2500.00"}]}})
    [ns] = SandboxObject.objects.filter(system="netsuite", object_type="invoice")
    inject("hubspot", fail_next_count=1, fail_next_status=503)  # the CRM hiccups once: retried, not held
    callbacks.send_callback("invoice.created", {"id": str(ns.pk), "externalId": ns.external_key, **ns.data})
    run_worker()
    rec = SyncRecord.objects.get(workflow="invoice_payment_to_crm")
    assert rec.status == "succeeded"
    assert list(Attempt.objects.filter(record=rec, system="hubspot").values_list("response_status", flat=True)
                .order_by("started_at"))[:1] == [503]
    inv = Invoice.objects.get()
    assert (inv.engagement, inv.due_on, inv.amount_due) == (e, due, D("2500.00"))
    assert (deal()["handoff_days_overdue"], deal()["handoff_payment_status"]) == ("12", "overdue")
    company = deal("companies")
    assert (company["handoff_days_overdue"], company["handoff_open_amount"]) == ("12", "2500.00 USD")


def test_what_the_crm_is_told_costs_the_same_few_queries_for_many_invoices(firm, django_assert_max_num_queries):
    from apps.sync.workflows.invoice_payment_to_crm import crm_values

    e = linked_engagement()
    today = timezone.localdate()
    ids = [Invoice.objects.create(engagement=e, customer=e.customer, source_system="netsuite", external_id=str(i),
                                  number=f"INV{i}", currency="USD", total=D("100.00"), amount_due=D("100.00"),
                                  status="open", due_on=today - timedelta(days=i)).pk for i in range(40)]
    with django_assert_max_num_queries(6):
        values = crm_values(ids, today)
    deal_props = next(v for (s, t, _), v in values.items() if t == "opportunity")
    assert (deal_props["handoff_open_amount"], deal_props["handoff_days_overdue"]) == ("4000.00", "39")
    assert len(values) == 2  # the deal and the company, once each


def test_a_newer_event_arriving_while_the_record_is_worked_is_not_lost(live):
    from apps.sync import engine

    e = linked_engagement(channel="stripe")
    stripe_webhooks.configure_webhooks(mode="hold")
    inv = invoice_milestone(e, "300.00")
    stripe_client().pay_invoice(inv.external_id, idempotency_key="pay-race")
    [finalized] = stripe_webhooks.events_for(inv.external_id, "invoice.finalized")
    [paid_event] = stripe_webhooks.events_for(inv.external_id, "invoice.paid")
    stripe_webhooks.deliver_event(finalized["id"])
    process_inbox()
    token, [rec] = engine.claim(priorities=[1], limit=10)  # a worker has taken the finalized record…
    stripe_webhooks.deliver_event(paid_event["id"])  # …when invoice.paid arrives
    assert process_inbox()["deferred"] == 1  # it waits for the worker, rather than being overwritten or lost
    assert InboundEvent.objects.get(event_id=paid_event["id"]).status == "received"
    assert engine.process_record(rec, token, engine.Batch()) == "succeeded"
    assert process_inbox()["refreshed"] == 1  # the record is done: the newer state runs it again
    assert InboundEvent.objects.get(event_id=paid_event["id"]).record_id == rec.pk
    engine.drain("high")
    rec.refresh_from_db()
    inv.refresh_from_db()
    assert inv.status == "paid" and rec.context["source_modified_at"] == rec.current_payload["source_modified_at"]
    assert rec.current_payload["status"] == "paid"
    assert (deal()["handoff_invoice_status"], deal()["handoff_open_amount"]) == ("paid", "0.00")


def test_the_record_is_found_by_invoice_number_and_engagement_code(connections, api):
    e = linked_engagement(crm=None)
    ns_id = e.customer.pk  # any id: the invoice is resolved through its project (job) link below
    from apps.canonical.services import external_id_get

    job = external_id_get(obj=e, system="netsuite", object_type="job")
    post_netsuite(api, {"type": "invoice.created", "data": ns_invoice(id=str(ns_id), tranId="INV77777",
                                                                 job={"id": job})})
    process_inbox()
    from apps.sync import engine

    engine.drain("high")
    rec = SyncRecord.objects.get()
    assert rec.status == "succeeded", rec.message
    assert {"INV77777", e.code} <= set(rec.search_keys)


def test_a_crm_failure_counts_against_the_crm_not_the_system_the_event_came_from(live):
    """A Stripe invoice event writes its status to HubSpot: HubSpot's 503s open HubSpot's circuit, not Stripe's."""
    from apps.sync import engine

    e = linked_engagement(channel="stripe")
    stripe_webhooks.configure_webhooks(mode="hold")
    inv = invoice_milestone(e, "300.00")
    Connection.objects.filter(kind="hubspot").update(consecutive_failures=0)
    [finalized] = stripe_webhooks.events_for(inv.external_id, "invoice.finalized")
    inject("hubspot", fail_next_count=1, fail_next_status=503)
    stripe_webhooks.deliver_event(finalized["id"])
    process_inbox()
    engine.drain("high", max_seconds=10)
    rec = SyncRecord.objects.get(workflow="invoice_payment_to_crm")
    assert (rec.status, rec.stage, rec.failed_system) == ("retrying", "crm", "hubspot")
    assert Connection.objects.get(kind="hubspot").consecutive_failures == 1
    assert Connection.objects.get(kind="stripe").consecutive_failures == 0

    SyncRecord.objects.filter(pk=rec.pk).update(next_attempt_at=timezone.now())
    engine.drain("high", max_seconds=10)
    rec.refresh_from_db()
    assert rec.status == "succeeded", rec.message
    assert Connection.objects.get(kind="hubspot").consecutive_failures == 0  # the streak ends with a success
    assert deal()["handoff_invoice_status"] == "open"


def test_a_paused_crm_makes_an_invoice_event_wait_without_calling_it(live):
    """The CRM an invoice's status goes to is known only once the stage runs: a paused one is not called, and the
    record waits (no attempt spent) until it is resumed."""
    from apps.sync import circuit, engine

    e = linked_engagement(channel="stripe")
    stripe_webhooks.configure_webhooks(mode="hold")
    inv = invoice_milestone(e, "300.00")
    [finalized] = stripe_webhooks.events_for(inv.external_id, "invoice.finalized")
    Connection.objects.filter(kind="hubspot").update(paused=True, paused_by="admin", paused_reason="maintenance")
    writes = SandboxObject.objects.get(system="hubspot", object_type="deals").writes
    stripe_webhooks.deliver_event(finalized["id"])
    process_inbox()
    engine.drain("high", max_seconds=10)
    rec = SyncRecord.objects.get(workflow="invoice_payment_to_crm")
    assert (rec.status, rec.stage, rec.reason_code, rec.attempts) == ("retrying", "crm", "connection_paused", 0)
    assert "maintenance" in rec.message
    assert not Attempt.objects.filter(record=rec, system="hubspot").exists()
    assert SandboxObject.objects.get(system="hubspot", object_type="deals").writes == writes

    circuit.resume(Connection.objects.get(kind="hubspot"))
    SyncRecord.objects.filter(pk=rec.pk).update(next_attempt_at=timezone.now())
    engine.drain("high", max_seconds=10)
    rec.refresh_from_db()
    assert rec.status == "succeeded", rec.message
    assert deal()["handoff_invoice_status"] == "open"
