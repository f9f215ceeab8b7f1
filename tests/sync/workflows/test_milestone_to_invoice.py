"""Milestone to invoice: the readiness rules (pure), the Kantata story.completed callback, each hold reason through
the engine, and the end-to-end path through a real worker to NetSuite and to Stripe over HTTP — one invoice per
milestone whatever is redelivered, retried or lost."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import override_settings
from django.utils import timezone

from apps.canonical.models import Milestone
from apps.finance import invoicing
from apps.finance.invoicing import EngagementFacts, MilestoneFacts, readiness
from apps.finance.models import ExchangeRate, Invoice
from apps.sandbox import callbacks
from apps.sandbox.models import SandboxObject
from apps.sandbox.stripe import views as stripe_views
from apps.sandbox.stripe import webhooks as stripe_webhooks
from apps.sync import engine, services
from apps.sync.intake import process_inbox
from apps.sync.models import Attempt, InboundEvent, SyncRecord

from tests.worker import inject, run_worker, sandbox_count
from tests.builders import linked_engagement, story, workspace_id
from tests.callbacks import kantata_envelope, post_kantata

D = Decimal


# ------------------------------------------------------------------ the readiness rules (pure)


def facts(**kw) -> EngagementFacts:
    base = dict(code="ENG-000001", contract_type="milestone", billing_schedule="on milestones",
                contract_value=D("100000.00"), currency="USD", committed=D("0"), customer_name="Acme",
                customer_in_erp=True, base_currency="USD", rate_found=True)
    base.update(kw)
    return EngagementFacts(**base)


def ms(amount="25000.00", currency="USD") -> MilestoneFacts:
    return MilestoneFacts(name="Phase 1", amount=D(amount) if amount is not None else None, currency=currency,
                          workspace_id="ws-1")


def reasons(findings) -> list[str]:
    return [f.reason for f in findings]


def test_a_milestone_within_a_milestone_contract_is_ready():
    assert readiness(ms(), facts()) == []
    assert readiness(ms(), facts(contract_type="fixed_fee", billing_schedule="Milestone schedule A")) == []


def test_unknown_project():
    [f] = readiness(ms(), None)
    assert f.reason == "unknown_project" and "ws-1" in f.message and f.fields == ("workspace_id",)


@pytest.mark.parametrize("ctype, schedule", [("t_and_m", "monthly in arrears"), ("retainer", "monthly in advance"),
                                             ("fixed_fee", "monthly"), ("t_and_m", "")])
def test_only_milestone_billing_contracts_bill_milestones(ctype, schedule):
    assert reasons(readiness(ms(), facts(contract_type=ctype, billing_schedule=schedule))) == [
        "contract_not_milestone_billed"]


@pytest.mark.parametrize("ctype", ["milestone", "fixed_fee"])
def test_a_missing_billing_schedule_is_held(ctype):
    assert reasons(readiness(ms(), facts(contract_type=ctype, billing_schedule="  "))) == ["missing_billing_schedule"]


def test_the_amount_may_not_exceed_the_remaining_contract_value():
    # 100,000 − 80,000 committed = 20,000 left: 20,000.00 fits exactly, 20,000.01 does not
    assert readiness(ms("20000.00"), facts(committed=D("80000.00"))) == []
    [f] = readiness(ms("20000.01"), facts(committed=D("80000.00")))
    assert f.reason == "milestone_exceeds_remaining_value" and "20000.00" in f.message
    assert invoicing.remaining_value(D("100000.00"), D("80000.00")) == D("20000.00")


def test_one_currency_per_invoice():
    assert reasons(readiness(ms(currency="EUR"), facts())) == ["currency_mismatch"]


def test_the_customer_must_be_active_in_the_erp():
    assert reasons(readiness(ms(), facts(customer_in_erp=False))) == ["customer_not_in_erp"]


def test_a_rate_to_base_currency_is_needed():
    assert reasons(readiness(ms(), facts(rate_found=False, base_currency="GBP"))) == ["missing_exchange_rate"]


def test_every_failing_rule_is_reported_at_once():
    found = reasons(readiness(ms(amount=None, currency="EUR"),
                              facts(contract_type="retainer", customer_in_erp=False)))
    assert found == ["payload_schema_invalid", "contract_not_milestone_billed", "currency_mismatch",
                     "customer_not_in_erp"]
    assert reasons(readiness(ms(amount="-5"), facts())) == ["payload_schema_invalid"]


# ------------------------------------------------------------------ the Kantata callback


def test_a_completed_milestone_story_makes_one_record(connections, api):
    e = linked_engagement()
    data = story(e, amount=None, budget_estimate_in_cents=1234567, story_id=777)
    r = post_kantata(api, kantata_envelope(data), msg_id="msg_777")
    assert r.status_code == 202, r.content
    assert post_kantata(api, kantata_envelope(data), msg_id="msg_777").status_code == 200  # a redelivery is stored once
    process_inbox()
    rec = SyncRecord.objects.get()
    assert (rec.workflow, rec.source_key, rec.priority) == ("milestone_to_invoice", "story:777", 1)
    assert rec.current_payload["amount"] == "12345.67" and rec.current_payload["workspace_id"] == workspace_id(e)
    assert InboundEvent.objects.get(event_id="msg_777").deliveries == 2


@pytest.mark.parametrize("change, why", [({"story_type": "task"}, "not a milestone"),
                                         ({"state": "started"}, "not completed")])
def test_other_stories_are_stored_as_ignored(connections, api, change, why):
    r = post_kantata(api, kantata_envelope(story(linked_engagement(), **change)))
    assert r.status_code == 200
    ev = InboundEvent.objects.get()
    assert ev.status == "ignored" and why in ev.reason


def test_a_story_without_id_or_project_is_refused(connections, api):
    e = linked_engagement()
    assert post_kantata(api, kantata_envelope({**story(e), "id": None})).status_code == 400
    r = post_kantata(api, kantata_envelope({**story(e), "workspace_id": ""}))
    assert r.status_code == 400 and b"workspace_id" in r.content
    assert post_kantata(api, kantata_envelope(story(e)), secret="not-the-secret").status_code == 401
    assert InboundEvent.objects.filter(status="rejected").count() == 3


# ------------------------------------------------------------------ each hold reason, through the engine


def hold(api, data) -> SyncRecord:
    post_kantata(api, kantata_envelope(data))
    process_inbox()
    engine.drain("high")
    return SyncRecord.objects.get(workflow="milestone_to_invoice", source_key=f"story:{data['id']}")


@pytest.mark.parametrize("setup, change, reason, team", [
    ({}, {"workspace": "999999999"}, "unknown_project", "pmo"),
    ({"contract_type": "t_and_m", "billing_schedule": "monthly in arrears"}, {}, "contract_not_milestone_billed",
     "finance_ops"),
    ({"contract_type": "retainer"}, {}, "contract_not_milestone_billed", "finance_ops"),
    ({"contract_type": "fixed_fee", "billing_schedule": ""}, {}, "missing_billing_schedule", "finance_ops"),
    ({"contract_value": "20000.00"}, {"amount": "25000.00"}, "milestone_exceeds_remaining_value", "finance_ops"),
    ({"in_erp": False}, {}, "customer_not_in_erp", "finance_ops"),
    ({}, {"currency": "EUR"}, "currency_mismatch", "pmo"),
    ({"currency": "USD", "legal_entity": "UK01"}, {}, "missing_exchange_rate", "finance_ops"),
])
def test_each_readiness_rule_holds_the_milestone_before_anything_is_written(connections, api, setup, change,
                                                                             reason, team):
    e = linked_engagement(**setup)
    rec = hold(api, story(e, **change))
    assert rec.status == "held" and rec.reason_code == reason, rec.message
    assert rec.owner_team == team and rec.priority == 1
    assert rec.message and not Attempt.objects.filter(record=rec).exists()
    assert not Milestone.objects.exists() and not Invoice.objects.exists()


def test_already_invoiced_and_in_flight_milestones_count_against_the_contract_value(connections, api):
    e = linked_engagement(contract_value="50000.00")
    Invoice.objects.create(engagement=e, customer=e.customer, source_system="netsuite", external_id="1",
                           currency="USD", total=D("20000.00"), status="paid")
    Invoice.objects.create(engagement=e, customer=e.customer, source_system="netsuite", external_id="2",
                           currency="USD", total=D("9000.00"), status="void")  # voided: not billed
    Milestone.objects.create(engagement=e, name="M2", amount=D("15000.00"), currency="USD", status="completed",
                             source_key="in-flight")
    rec = hold(api, story(e, amount="15000.01"))  # 50,000 − 20,000 − 15,000 = 15,000 left
    assert rec.reason_code == "milestone_exceeds_remaining_value"
    assert "15000.00" in rec.message
    # the fix form's dry run: 15,000.00 fits
    dry = services.record_dry_run(record=rec, changes={"amount": "15000.00"})
    assert dry["problems"] == []


def test_a_milestone_priced_in_another_currency_than_its_engagement_is_held(connections, api):
    e = linked_engagement(currency="EUR", legal_entity="DE01")
    rec = hold(api, story(e, currency="USD"))
    assert rec.reason_code == "currency_mismatch" and "currency" in rec.fault_fields


# ------------------------------------------------------------------ end to end: NetSuite


@pytest.fixture
def callbacks_to_handoff(sandboxes, live_server):
    """The sandboxes send their callbacks to the live server (as they send them to Handoff in the demo)."""
    for system in ("netsuite", "kantata"):
        callbacks.configure_callbacks(system, url=f"{live_server.url}/api/v1/callbacks/{system}/")
    stripe_webhooks.configure_webhooks(url=f"{live_server.url}/api/v1/callbacks/stripe/")
    return live_server


def deliver_story(data: dict, times: int = 1) -> dict:
    """Kantata sends story.completed (signed), `times` times with the same webhook-id."""
    msg = callbacks.send_callback("story.completed", data, system="kantata", msg_id=f"msg_story_{data['id']}")
    if times > 1:
        callbacks.deliver_callback(msg["id"], system="kantata", times=times - 1)
    return msg


@override_settings(HANDOFF_HTTP_TIMEOUT=1.0)
def test_a_completed_milestone_becomes_exactly_one_netsuite_invoice(callbacks_to_handoff):
    e = linked_engagement(contract_value="120000.00")
    data = story(e, amount="30000.00")
    deliver_story(data, times=3)
    assert InboundEvent.objects.get(event_type="story.completed").deliveries == 3
    # the ERP commits the invoice, then its answer is lost: the worker times out and retries
    inject("netsuite", lost_response_rate=1.0, hang_ms=1500)
    process_inbox()
    engine.drain("high")
    rec = SyncRecord.objects.get(workflow="milestone_to_invoice")
    assert rec.status == "retrying" and rec.stage == "erp_invoice"
    assert sandbox_count("netsuite", "invoice") == 1
    inject("netsuite", lost_response_rate=0.0)

    run_worker()

    rec.refresh_from_db()
    assert rec.status == "succeeded", rec.message
    [ns] = SandboxObject.objects.filter(system="netsuite", object_type="invoice")
    assert ns.writes == 2 and ns.external_key == f"HO-MS-{data['id']}"
    assert ns.data["total"] == "30000.00" and ns.data["entity"]["id"] == str(
        SandboxObject.objects.get(system="netsuite", object_type="customer").pk)
    inv = Invoice.objects.get()
    assert (inv.source_system, inv.external_id, inv.number) == ("netsuite", str(ns.pk), ns.data["tranId"])
    assert inv.milestone.source_key == data["id"] and inv.milestone.status == "invoiced"
    assert (inv.total, inv.amount_due, inv.status, inv.currency) == (D("30000.00"), D("30000.00"), "open", "USD")
    assert (inv.base_currency, inv.base_total, inv.fx_rate) == ("USD", D("30000.00"), D(1))
    assert inv.due_on == timezone.localdate() + timedelta(days=30)
    assert rec.context["invoice_number"] == ns.data["tranId"]
    # the ERP's own callback (invoice.created) carried it on to the CRM deal
    crm = SyncRecord.objects.get(workflow="invoice_payment_to_crm")
    assert crm.status == "succeeded", crm.message
    deal = SandboxObject.objects.get(system="hubspot", object_type="deals").data["properties"]
    assert (deal["handoff_invoice_number"], deal["handoff_invoice_status"], deal["handoff_open_amount"]) == (
        ns.data["tranId"], "open", "30000.00")

    # the PSA sends the same milestone again later (a new message): nothing new is invoiced
    callbacks.send_callback("story.completed", {**data, "updated_at": "2030-01-01T00:00:00Z"}, system="kantata")
    run_worker()
    assert sandbox_count("netsuite", "invoice") == 1 and Invoice.objects.count() == 1


@override_settings(HANDOFF_HTTP_TIMEOUT=1.0)
def test_a_multi_currency_milestone_keeps_base_amounts_with_the_rate(callbacks_to_handoff):
    e = linked_engagement(currency="EUR", legal_entity="UK01", contract_value="80000.00")
    ExchangeRate.objects.create(from_currency="EUR", to_currency="GBP", rate=D("0.85000000"),
                                rate_date=timezone.localdate() - timedelta(days=3))
    deliver_story(story(e, amount="12345.70"))
    run_worker()
    inv = Invoice.objects.get()
    assert (inv.currency, inv.total, inv.base_currency) == ("EUR", D("12345.70"), "GBP")
    assert inv.fx_rate == D("0.85") and inv.fx_date == timezone.localdate() - timedelta(days=3)
    assert inv.base_total == D("10493.85")  # 12345.70 × 0.85 = 10493.845 → half up (not half even: .84)


def test_netsuite_refusing_the_invoice_holds_it_with_its_message(callbacks_to_handoff):
    e = linked_engagement()
    SandboxObject.objects.filter(system="netsuite", object_type="customer").delete()  # gone from the ERP
    deliver_story(story(e))
    run_worker()
    rec = SyncRecord.objects.get(workflow="milestone_to_invoice")
    assert rec.status == "held" and rec.reason_code == "downstream_validation"
    assert rec.failed_system == "netsuite" and "entity" in rec.message
    assert rec.owner_team == "finance_ops" and not Invoice.objects.exists()


# ------------------------------------------------------------------ end to end: Stripe


@override_settings(HANDOFF_HTTP_TIMEOUT=1.0)
def test_a_stripe_billed_milestone_becomes_exactly_one_finalized_stripe_invoice(callbacks_to_handoff):
    e = linked_engagement(channel="stripe", contract_value="60000.00", terms="NET15")
    data = story(e, amount="9999.99")
    # the first call fails (503), and the invoice create is carried out but its answer is lost
    inject("stripe", fail_next_count=1, fail_next_status=503, hang_ms=1500)
    stripe_views.lose_next("POST", "/v1/invoices", 1)
    deliver_story(data)

    run_worker()

    rec = SyncRecord.objects.get(workflow="milestone_to_invoice")
    assert rec.status == "succeeded", rec.message
    [si] = SandboxObject.objects.filter(system="stripe", object_type="invoice")
    assert si.data["status"] == "open" and si.data["total"] == 999999 and si.data["currency"] == "usd"
    assert si.data["metadata"]["handoff_milestone"] == data["id"]
    assert sandbox_count("stripe", "customer") == 1 and sandbox_count("stripe", "invoiceitem") == 1
    creates = Attempt.objects.filter(record=rec, system="stripe", method="POST", url="/v1/invoices")
    assert creates.count() == 2 and creates.filter(response_status__isnull=True).count() == 1
    assert all("Idempotency-Key: handoff-ms-" in a.request_summary for a in creates)
    assert Attempt.objects.filter(record=rec, system="stripe", response_status=503).count() == 1
    inv = Invoice.objects.get()
    assert (inv.source_system, inv.external_id, inv.number) == ("stripe", si.external_key, si.data["number"])
    assert inv.milestone.status == "invoiced" and inv.total == D("9999.99") and inv.idempotency_key
    assert inv.due_on == timezone.localdate() + timedelta(days=15)
    # Stripe's invoice.finalized webhook reached the CRM too
    assert SyncRecord.objects.get(workflow="invoice_payment_to_crm").status == "succeeded"
    deal = SandboxObject.objects.get(system="hubspot", object_type="deals").data["properties"]
    assert (deal["handoff_invoice_status"], deal["handoff_open_amount"]) == ("open", "9999.99")

    # a resubmission from the start (e.g. by an admin) finds every step done: still one invoice
    SyncRecord.objects.filter(pk=rec.pk).update(status="held")
    rec.refresh_from_db()
    from django.contrib.auth.models import Group, User

    from apps.core.roles import define_roles
    from django.contrib.auth.models import Permission

    define_roles(Group, Permission)
    admin = User.objects.create_user("carol2")
    admin.groups.add(Group.objects.get(name="integration_admin"))
    services.record_resubmit(record_id=rec.pk, actor=admin, expected_version=rec.version, from_start=True)
    run_worker()
    rec.refresh_from_db()
    assert rec.status == "succeeded"
    assert sandbox_count("stripe", "invoice") == 1 and sandbox_count("stripe", "invoiceitem") == 1
    assert Invoice.objects.count() == 1


def test_the_readiness_check_costs_the_same_few_queries_however_much_was_billed(connections,
                                                                                 django_assert_max_num_queries):
    from apps.sync.workflows.milestone_to_invoice import validate

    e = linked_engagement(contract_value="1000000.00")
    Invoice.objects.bulk_create([Invoice(engagement=e, customer=e.customer, source_system="netsuite",
                                         external_id=str(i), currency="USD", total=D("1000.00"), status="open")
                                 for i in range(50)])
    Milestone.objects.bulk_create([Milestone(engagement=e, name=f"M{i}", amount=D("500.00"), currency="USD",
                                             status="completed", source_key=f"s{i}") for i in range(20)])
    def payload(amount):
        from apps.connectors.kantata.inbound import parse_story_completed

        return parse_story_completed(None, "msg", {"type": "story.completed", "data": story(e, amount=amount)}).payload

    over = payload("940000.01")
    with django_assert_max_num_queries(8):
        problems = validate(over)
    # 1,000,000 − 50 × 1,000 invoiced − 20 × 500 in flight = 940,000.00 left
    assert [p.reason for p in problems] == ["milestone_exceeds_remaining_value"]
    assert validate(payload("940000.00")) == []


def test_completing_a_milestone_story_in_the_psa_sandbox_sends_the_signed_callback(callbacks_to_handoff):
    import requests

    e = linked_engagement()
    url = f"{callbacks_to_handoff.url}/sandbox/kantata/api/v1/stories"
    auth = {"Authorization": "Bearer sandbox-kantata-token"}
    created = requests.post(f"{url}.json", json={"story": {
        "title": "Go-live", "workspace_id": workspace_id(e), "story_type": "milestone", "price": "7500.00",
        "currency": "USD"}}, headers=auth, timeout=10).json()
    [sid] = [r["id"] for r in created["results"]]
    assert requests.put(f"{url}/{sid}.json", json={"story": {"state": "started"}}, headers=auth,
                        timeout=10).status_code == 200
    assert not InboundEvent.objects.exists()  # only a completion is sent
    requests.put(f"{url}/{sid}.json", json={"story": {"state": "completed"}}, headers=auth, timeout=10)
    ev = InboundEvent.objects.get()
    assert (ev.event_type, ev.status, ev.source_key) == ("story.completed", "received", f"story:{sid}")
    run_worker()
    assert Invoice.objects.get().total == D("7500.00")
    assert SandboxObject.objects.get(system="kantata", object_type="story").data["completed_at"]
