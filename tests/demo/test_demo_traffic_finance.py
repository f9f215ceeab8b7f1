"""The demo's delivery-to-cash traffic (apps/demo/finance_traffic.py) against the sandboxes over real HTTP,
worked by a real RQ worker: deals won through quote-to-project, change orders, approved time and expenses, completed
milestones invoiced in NetSuite and Stripe, Stripe payments / failures / disputes (one delivered twice, one out of
order), a NetSuite payment — every hold reason of time & expense to billing present, the good ones through, the
corrected entry updating its one ERP line, and nothing duplicated downstream."""

from __future__ import annotations

import random
from collections import Counter
from decimal import Decimal

import pytest

from apps.canonical.models import Engagement, EngagementChange
from apps.demo.finance_plan import CAP, Sent, settled
from apps.demo.finance_traffic import FinanceTraffic
from apps.finance.models import ExpenseEntry, Invoice, Payment, TimeEntry
from apps.sandbox import callbacks
from apps.sandbox.models import SandboxObject
from apps.sandbox.stripe import webhooks as stripe_webhooks
from apps.sync.models import Connection, InboundEvent, SyncRecord

from tests.worker import run_worker

pytestmark = pytest.mark.django_db(transaction=True)

TIME_HOLDS = {"unknown_project", "project_closed", "unknown_rate_card_role", "entry_outside_engagement_dates",
              "tm_cap_exceeded", "missing_dimension_mapping"}


@pytest.fixture
def traffic(deliverer, live_server):
    """The sandboxes send their callbacks to the live server; Anaplan imports are polled quickly."""
    for system in ("netsuite", "kantata"):
        callbacks.configure_callbacks(system, url=f"{live_server.url}/api/v1/callbacks/{system}/")
    stripe_webhooks.configure_webhooks(url=f"{live_server.url}/api/v1/callbacks/stripe/")
    Connection.objects.filter(slug="anaplan").update(settings={"poll_seconds": 0.05})
    settles = []

    def settle(sent: Sent, what: str) -> bool:
        run_worker()
        settles.append((what, settled(sent)))
        return True

    t = FinanceTraffic(deliverer, handoff_url=live_server.url, sandbox_url=live_server.url, settle=settle,
                       rng=random.Random(7), say=lambda line: None)
    t.settles = settles
    return t


def records(workflow: str, **kw):
    return SyncRecord.objects.filter(workflow=workflow, **kw)


def test_the_finance_burst_and_trickle_go_end_to_end_with_every_hold_and_nothing_duplicated(traffic):
    targets = traffic.burst()

    # every step finished before the next one started
    assert [ok for _, ok in traffic.settles] == [True] * len(traffic.settles), traffic.settles
    assert set(targets) == {"tm", "capped", "milestone", "stripe", "closed"}
    assert not InboundEvent.objects.filter(status="rejected").exists()
    assert set(records("quote_to_project").values_list("status", flat=True)) == {"succeeded"}

    # change orders: four applied (rate card, dates, schedule), one held below what is invoiced
    cos = Counter(records("change_order").values_list("status", "reason_code"))
    assert cos == {("succeeded", ""): 4, ("held", "contract_value_below_invoiced"): 1}, cos
    tm = Engagement.objects.get(pk=targets["tm"].engagement_id)
    assert (tm.rate_card.name, tm.billing_schedule, tm.start_date) == ("Standard USD 2026", "monthly in arrears",
                                                                      targets["tm"].start)
    assert Engagement.objects.get(pk=targets["capped"].engagement_id).tm_cap == CAP
    assert EngagementChange.objects.filter(status="held").count() == 1

    # time & expenses: every hold reason present, held before anything reached the ERP
    held = records("time_to_billing", status="held")
    assert set(held.values_list("reason_code", flat=True)) == TIME_HOLDS
    for r in held:
        assert r.stage == "price" and r.message, (r.reason_code, r.message)
    ok = records("time_to_billing", status="succeeded")
    assert ok.count() == 10  # 6 + the corrected one + 2 expenses + the one within the cap
    assert records("time_to_billing").count() == ok.count() + len(TIME_HOLDS)
    # one ERP line per posted entry, whatever was redelivered or corrected
    keys = list(SandboxObject.objects.filter(system="netsuite", object_type__in=["timebill", "charge"])
                .values_list("external_key", flat=True))
    assert len(keys) == len(set(keys)) == 10
    assert TimeEntry.objects.filter(status="posted").count() == 8
    twice = InboundEvent.objects.filter(connection__slug="kantata", deliveries=2)
    assert twice.count() == 1 and twice.get().record.status == "succeeded"

    # the corrected entry updated its one posted line: 6 h at the senior rate, written twice
    entry_id = traffic.corrected["id"]
    [line] = SandboxObject.objects.filter(system="netsuite", object_type="timebill", external_key=f"HO-TE-{entry_id}")
    assert (line.writes, line.data["hours"], line.data["rate"], line.data["custcol_ho_role"]) == (
        2, "6:00", "245.00", "Senior Consultant")
    te = TimeEntry.objects.get(source_id=entry_id)
    assert (te.hours, te.amount, te.status) == (Decimal("6.00"), Decimal("1470.00"), "posted")
    assert records("time_to_billing", source_key=f"time_entry:{entry_id}").get().status == "succeeded"

    # milestones: NetSuite and Stripe invoices; the readiness check held two
    ms = Counter(records("milestone_to_invoice").values_list("status", "reason_code"))
    assert ms == {("succeeded", ""): 5, ("held", "milestone_exceeds_remaining_value"): 1,
                  ("held", "contract_not_milestone_billed"): 1}, ms
    assert SandboxObject.objects.filter(system="netsuite", object_type="invoice").count() == 1
    assert SandboxObject.objects.filter(system="stripe", object_type="invoice").count() == 4
    assert Invoice.objects.filter(source_system="stripe").count() == 4
    assert Invoice.objects.filter(source_system="netsuite").count() == 1
    ns_keys = list(SandboxObject.objects.filter(system="netsuite", object_type="invoice")
                   .values_list("external_key", flat=True))
    assert len(ns_keys) == len(set(ns_keys))

    # invoices and payments back to the CRM: every state, written to real deals
    crm = records("invoice_payment_to_crm")
    assert set(crm.values_list("status", flat=True)) == {"succeeded"}, list(crm.values_list("message", flat=True))
    statuses = Counter(Invoice.objects.filter(source_system="stripe").values_list("status", flat=True))
    assert statuses == {"paid": 3, "disputed": 1}, statuses
    assert crm.filter(source_key__startswith="dispute:").count() == 1
    types = set(InboundEvent.objects.filter(connection__slug="stripe").values_list("event_type", flat=True))
    assert {"invoice.finalized", "invoice.paid", "invoice.payment_failed", "charge.dispute.created"} <= types
    assert InboundEvent.objects.filter(connection__slug="stripe", event_type="invoice.paid", deliveries=2).exists()
    ns_invoice = Invoice.objects.get(source_system="netsuite")
    assert ns_invoice.status == "open" and ns_invoice.amount_paid == ns_invoice.total / 2
    assert Payment.objects.filter(source_system="netsuite").count() == 1

    # the invoice whose events came out of order (paid before finalized) stays paid, and the CRM says so
    late = Invoice.objects.get(milestone__source_key=traffic.targets["stripe"].milestones[-1])
    assert late.status == "paid" and late.amount_due == 0
    arrived = InboundEvent.objects.filter(connection__slug="stripe", source_key=f"invoice:{late.external_id}")
    assert list(arrived.order_by("received_at").values_list("event_type", flat=True)) == [
        "invoice.paid", "invoice.finalized"]
    deal = SandboxObject.objects.get(system="hubspot", object_type="deals",
                                     pk=int(traffic.targets["stripe"].opportunity_id)).data["properties"]
    assert deal["handoff_payment_status"] == "disputed"  # the engagement has a disputed invoice
    # the Salesforce-won engagement's NetSuite invoice reached its opportunity and its Account (which
    # Deliverer.create_salesforce created with the opportunity, as the Salesforce sandbox stores it)
    ms = traffic.targets["milestone"]
    opp = SandboxObject.objects.get(system="salesforce", object_type="Opportunity",
                                    external_key=ms.opportunity_id).data["fields"]
    account = SandboxObject.objects.get(system="salesforce", object_type="Account",
                                        external_key=opp["AccountId"]).data["fields"]
    assert account["Name"] == opp["Account_Name__c"] and account["Id"] == opp["AccountId"]
    assert opp["Invoice_Number__c"] == ns_invoice.number and account["Open_Invoices__c"] == 1
    # live time and expenses bill with the demo firm's own service codes, posted to the sandbox ERP's segments
    assert set(TimeEntry.objects.filter(status="posted").values_list("service_code", flat=True)) == {"CONS"}
    assert set(ExpenseEntry.objects.filter(status="posted").values_list("service_code", flat=True)) == {"EXP"}


    # the trickle: one item at a time on the same engagements, all worked, still nothing duplicated
    last = SyncRecord.objects.order_by("-pk").values_list("pk", flat=True).first()
    for _ in range(9):
        traffic.tick()
    run_worker()
    new = SyncRecord.objects.filter(pk__gt=last)
    assert {"time_to_billing", "milestone_to_invoice", "invoice_payment_to_crm"} <= set(
        new.values_list("workflow", flat=True))
    assert not SyncRecord.objects.filter(status__in=["pending", "retrying", "in_progress", "dead"]).exists()
    assert not records("invoice_payment_to_crm", status="held").exists()
    objects = list(SandboxObject.objects.filter(system="netsuite", object_type__in=["timebill", "charge", "invoice"])
                   .values_list("object_type", "external_key"))
    assert len(objects) == len(set(objects))
    assert records("time_to_billing").count() == TimeEntry.objects.count() + ExpenseEntry.objects.count() + (
        records("time_to_billing", status="held").count())
