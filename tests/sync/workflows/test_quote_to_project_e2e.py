"""Quote-to-project all the way through: callbacks over HTTP → a real RQ worker → the sandboxes over HTTP."""

from __future__ import annotations

import random

import pytest

from apps.canonical.models import Customer, Engagement, ExternalId
from apps.demo.deals import make_opportunity
from apps.sandbox.models import SandboxObject
from apps.sync import services
from apps.sync.models import Attempt, AuditEntry, InboundEvent, SyncRecord

from tests.worker import inject, run_worker, sandbox_count

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_creates_customer_and_project_and_writes_ids_back_to_hubspot(deliverer):
    opp = make_opportunity(random.Random(1), "good")
    [resp] = deliverer.deliver(opp, via="hubspot")
    assert resp.status_code == 202

    run_worker()

    record = SyncRecord.objects.get()
    assert record.status == "succeeded", record.message
    assert record.title == opp.name
    assert sandbox_count("netsuite", "customer") == 1
    assert sandbox_count("kantata", "workspace") == 1
    assert sandbox_count("netsuite", "job") == 1
    deal = SandboxObject.objects.get(system="hubspot", object_type="deals")
    props = deal.data["properties"]
    assert props["handoff_erp_customer_id"] == record.context["erp_customer_id"]
    assert props["handoff_psa_project_id"] == record.context["psa_project_id"]
    assert props["handoff_engagement_code"].startswith("ENG-")
    # the canonical objects exist and are linked to every system's id
    engagement = Engagement.objects.get()
    assert engagement.customer.name == opp.account
    assert str(engagement.contract_value) == opp.amount
    assert {(e.system, e.object_type) for e in ExternalId.objects.all()} >= {
        ("hubspot", "account"), ("hubspot", "opportunity"), ("netsuite", "customer"), ("kantata", "workspace"),
        ("netsuite", "job")}
    # every call is on record, each completed
    # deal, company, ERP customer, PSA search + create, ERP job, CRM write-back
    assert Attempt.objects.filter(record=record).count() == 7
    assert not Attempt.objects.filter(outcome="started").exists()


def test_it_writes_ids_back_to_salesforce(deliverer):
    opp = make_opportunity(random.Random(2), "good")
    [resp] = deliverer.deliver(opp, via="salesforce")
    assert resp.status_code == 200 and b"<Ack>true</Ack>" in resp.content

    run_worker()

    record = SyncRecord.objects.get()
    assert record.status == "succeeded", record.message
    opp_obj = SandboxObject.objects.get(system="salesforce", object_type="Opportunity")
    assert opp_obj.data["fields"]["ERP_Customer_Id__c"] == record.context["erp_customer_id"]
    assert opp_obj.data["fields"]["PSA_Project_Id__c"] == record.context["psa_project_id"]


def test_a_redelivered_event_is_processed_once(deliverer):
    opp = make_opportunity(random.Random(3), "good")
    responses = deliverer.deliver(opp, via="hubspot", times=3)
    assert [r.status_code for r in responses] == [202, 200, 200]

    run_worker()

    assert InboundEvent.objects.get().deliveries == 3
    assert SyncRecord.objects.count() == 1
    assert sandbox_count("netsuite", "customer") == 1
    assert sandbox_count("kantata", "workspace") == 1


@pytest.mark.parametrize("scenario, reason, field", [
    ("no_legal_entity", "missing_legal_entity", "legal_entity"),
    ("currency_not_enabled", "currency_not_enabled", "currency"),
    ("duplicate_customer", "duplicate_customer_suspected", "duplicate_resolution"),
    ("unknown_terms", "unknown_billing_terms", "billing_terms"),
    ("bad_tax_id", "downstream_validation", "account.tax_id"),
])
def test_it_holds_the_record_with_a_reason_naming_the_field(deliverer, scenario, reason, field):
    deliverer.deliver(make_opportunity(random.Random(4), scenario), via="hubspot")

    run_worker()

    record = SyncRecord.objects.get()
    assert record.status == "held"
    assert record.reason_code == reason
    assert field in record.fault_fields
    assert record.message
    # held before anything was half-created: validation holds write nothing downstream
    if reason != "downstream_validation":
        assert sandbox_count("netsuite", "customer") == 0
    else:
        assert record.failed_system == "netsuite" and "vatRegNumber" in record.system_message
    assert sandbox_count("kantata", "workspace") == 0


def test_a_transient_failure_is_retried_and_then_succeeds(deliverer):
    inject("kantata", fail_next_count=2, fail_next_status=503)
    deliverer.deliver(make_opportunity(random.Random(5), "good"), via="hubspot")

    run_worker()

    record = SyncRecord.objects.get()
    assert record.status == "succeeded", record.message
    outcomes = list(Attempt.objects.filter(record=record, system="kantata").values_list("outcome", flat=True))
    assert outcomes.count("transient") == 2
    assert sandbox_count("kantata", "workspace") == 1


def test_a_429_with_retry_after_is_honoured(deliverer):
    inject("netsuite", fail_next_count=1, fail_next_status=429, retry_after_seconds=1)
    deliverer.deliver(make_opportunity(random.Random(6), "good"), via="hubspot")

    run_worker()

    record = SyncRecord.objects.get()
    assert record.status == "succeeded"
    first, second = Attempt.objects.filter(record=record, stage="erp_customer").order_by("started_at")
    assert first.response_status == 429
    assert (second.started_at - first.started_at).total_seconds() >= 1.0


def test_a_system_that_stays_down_makes_a_dead_letter_after_max_attempts(deliverer, carol, alice):
    from apps.sync.models import Connection

    Connection.objects.update(circuit_threshold=100)  # this test is about retries, not the circuit breaker
    inject("kantata", fail_next_count=100, fail_next_status=500)
    deliverer.deliver(make_opportunity(random.Random(7), "good"), via="hubspot")

    run_worker()

    record = SyncRecord.objects.get()
    assert record.status == "dead"
    assert record.owner_team == "integration_admin"
    assert record.reason_code == "downstream_unavailable"
    assert record.stage == "psa_project"
    assert Attempt.objects.filter(record=record, system="kantata").count() == 5

    # the system is back: an integration admin replays the dead letter (a PMO analyst may not)
    inject("kantata", fail_next_count=0)
    with pytest.raises(services.NotAllowed):
        services.record_resubmit(record_id=record.pk, actor=alice, expected_version=record.version)
    services.record_resubmit(record_id=record.pk, actor=carol, expected_version=record.version, reason="replay")
    run_worker()
    record.refresh_from_db()
    assert record.status == "succeeded"
    assert sandbox_count("kantata", "workspace") == 1 and sandbox_count("netsuite", "customer") == 1


def test_a_held_record_fixed_and_resubmitted_goes_through_once(deliverer, alice):
    deliverer.deliver(make_opportunity(random.Random(8), "no_legal_entity"), via="hubspot")
    run_worker()
    record = SyncRecord.objects.get()
    assert record.status == "held"

    services.record_resubmit(record_id=record.pk, actor=alice, expected_version=record.version,
                             changes={"legal_entity": "US01"}, reason="set from the signed SOW")
    run_worker()

    record.refresh_from_db()
    assert record.status == "succeeded", record.message
    assert record.current_payload["legal_entity"] == "US01"
    assert record.original_payload["legal_entity"] == ""
    entry = AuditEntry.objects.get(record=record)
    assert (entry.actor, entry.action, entry.after) == (alice, "resubmit", {"legal_entity": "US01"})
    assert sandbox_count("netsuite", "customer") == 1
    assert sandbox_count("kantata", "workspace") == 1

    # a later re-delivery of the same deal and a resubmission from the start create nothing new
    SyncRecord.objects.filter(pk=record.pk).update(status="held")
    record.refresh_from_db()
    services.record_resubmit(record_id=record.pk, actor=alice, expected_version=record.version, from_start=True)
    run_worker()
    record.refresh_from_db()
    assert record.status == "succeeded"
    assert sandbox_count("netsuite", "customer") == 1
    assert sandbox_count("kantata", "workspace") == 1
    assert sandbox_count("netsuite", "job") == 1
    assert Customer.objects.filter(name=record.current_payload["account"]["name"]).count() == 1


def test_the_erp_rejected_tax_id_is_fixed_and_resubmitted(deliverer, bob):
    opp = make_opportunity(random.Random(9), "bad_tax_id")
    deliverer.deliver(opp, via="salesforce")
    run_worker()
    record = SyncRecord.objects.get()
    assert record.reason_code == "downstream_validation" and record.stage == "erp_customer"

    good_tax = {"US": "12-3456789", "GB": "GB123456780", "DE": "DE123456789"}[opp.country]
    services.record_resubmit(record_id=record.pk, actor=bob, expected_version=record.version,
                             changes={"account.tax_id": good_tax})
    run_worker()

    record.refresh_from_db()
    assert record.status == "succeeded", record.message
    customer = SandboxObject.objects.get(system="netsuite", object_type="customer")
    assert customer.data["vatRegNumber"] == good_tax
    assert sandbox_count("kantata", "workspace") == 1


def test_a_duplicate_is_linked_to_the_existing_customer(deliverer, alice):
    deliverer.deliver(make_opportunity(random.Random(10), "duplicate_customer"), via="hubspot")
    run_worker()
    record = SyncRecord.objects.get()
    northwind = Customer.objects.get(name="Northwind Traders")

    services.record_resubmit(record_id=record.pk, actor=alice, expected_version=record.version,
                             changes={"duplicate_resolution": f"link:{northwind.pk}"})
    run_worker()

    record.refresh_from_db()
    assert record.status == "succeeded", record.message
    assert Customer.objects.filter(name="Northwind Traders").count() == 1
    assert Engagement.objects.get().customer == northwind


def test_a_fix_that_still_fails_the_rules_is_not_resubmitted(deliverer, alice):
    deliverer.deliver(make_opportunity(random.Random(11), "currency_not_enabled"), via="hubspot")
    run_worker()
    record = SyncRecord.objects.get()

    with pytest.raises(services.StillInvalid) as exc:
        services.record_resubmit(record_id=record.pk, actor=alice, expected_version=record.version,
                                 changes={"legal_entity": "DE01"})
    assert exc.value.problems[0].reason == "currency_not_enabled"
    record.refresh_from_db()
    assert record.status == "held" and not AuditEntry.objects.exists()


def test_the_second_of_two_concurrent_fixes_gets_a_conflict(deliverer, alice, bob, carol):
    deliverer.deliver(make_opportunity(random.Random(12), "unknown_terms"), via="hubspot")
    run_worker()
    record = SyncRecord.objects.get()
    version = record.version

    assert record.owner_team == "finance_ops"
    with pytest.raises(services.NotAllowed):  # Alice is PMO: billing terms are finance ops' to fix
        services.record_resubmit(record_id=record.pk, actor=alice, expected_version=version,
                                 changes={"billing_terms": "NET30"})
    services.record_resubmit(record_id=record.pk, actor=bob, expected_version=version,
                             changes={"billing_terms": "NET30"})
    with pytest.raises(services.Conflict):
        services.record_resubmit(record_id=record.pk, actor=carol, expected_version=version,
                                 changes={"billing_terms": "NET45"})
    record.refresh_from_db()
    assert record.current_payload["billing_terms"] == "NET30"
    assert AuditEntry.objects.count() == 1


def test_a_batch_of_mixed_deals_ends_with_every_record_terminal_and_nothing_duplicated(deliverer):
    rng = random.Random(13)
    scenarios = ["good"] * 12 + ["no_legal_entity", "currency_not_enabled", "duplicate_customer",
                                 "unknown_terms", "bad_tax_id"]
    for i, s in enumerate(scenarios):
        deliverer.deliver(make_opportunity(rng, s), via="hubspot" if i % 2 else "salesforce", times=1 + i % 2)

    run_worker()

    statuses = dict(SyncRecord.objects.values_list("status").annotate(n=__import__("django.db.models",
                                                                                    fromlist=["Count"]).Count("id")))
    assert statuses == {"succeeded": 12, "held": 5}
    assert sandbox_count("kantata", "workspace") == 12
    assert sandbox_count("netsuite", "job") == 12
    # one ERP customer per succeeded record, plus the one whose tax id the ERP refused
    assert sandbox_count("netsuite", "customer") == 12


def test_a_record_costs_a_bounded_number_of_sql_statements_and_its_calls_are_logged_in_order(deliverer):
    """Performance is a feature: the engine commits a record's progress with the stages that write canonical data
    and at the end, and writes its attempts and links in one INSERT each — not two statements per call."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from apps.sync import engine, intake

    rng = random.Random(41)
    for _ in range(6):
        deliverer.deliver(make_opportunity(rng, "good"), via="hubspot")
    intake.process_inbox()
    with CaptureQueriesContext(connection) as q:
        counts = engine.drain("default")
    assert counts["succeeded"] == 6
    statements = [x for x in q.captured_queries if x["sql"] not in ("BEGIN", "COMMIT")]
    # 7 a record — the engine batches a stage's writes and makes its hot writes plain SQL, so the statements per
    # record stay constant — plus what a drain reads once: claims, connections, reference data
    assert len(statements) <= 7 * 6 + 10, len(statements)
    assert sum(x["sql"] == "COMMIT" for x in q.captured_queries) <= 2 + 2 * 6  # two claims, canonical writes, the record
    record = SyncRecord.objects.order_by("pk").first()
    calls = list(Attempt.objects.filter(record=record).order_by("started_at", "id")
                 .values_list("stage", "system", "method"))
    assert [c[0] for c in calls] == ["fetch", "fetch", "erp_customer", "psa_project", "psa_project", "erp_project",
                                     "crm_writeback"]
    assert calls[0] == ("fetch", "hubspot", "GET") and calls[-1] == ("crm_writeback", "hubspot", "PATCH")
    assert all(a.duration_ms is not None and a.outcome == "ok" for a in Attempt.objects.filter(record=record))
    assert sandbox_count("netsuite", "customer") == sandbox_count("kantata", "workspace") == 6


def test_a_deal_without_a_company_waits_for_one_and_then_goes_through(deliverer, django_user_model):
    opp = make_opportunity(random.Random(7), "good")
    deal_id = deliverer.create_hubspot(opp)
    deal = SandboxObject.objects.get(system="hubspot", object_type="deals")
    company_link = deal.data["associations"]
    deal.data["associations"] = {}
    deal.save()
    deliverer.send_hubspot(deliverer.hubspot_events([deal_id]))

    run_worker()

    record = SyncRecord.objects.get()
    assert (record.status, record.reason_code, record.owner_team) == ("held", "missing_account", "pmo")
    assert "no associated company in HubSpot" in record.message
    assert not Customer.objects.filter(name=opp.account).exists() and sandbox_count("netsuite", "customer") == 0

    deal.data["associations"] = company_link  # sales associates the company in HubSpot
    deal.save()
    pmo = django_user_model.objects.create_superuser("pat", "pat@example.com", "pw")
    services.record_resubmit(record_id=record.pk, actor=pmo, expected_version=record.version)
    run_worker()

    record.refresh_from_db()
    assert record.status == "succeeded", record.message
    assert Customer.objects.get(name=opp.account).tax_id == opp.tax_id
