"""Change orders: callbacks (HubSpot amendment webhooks, Salesforce Contract_Amendment__c Outbound Messages), the
rules (below-invoiced hold, rate card, dates, schedule), the canonical change with its history (once per
amendment, never older over newer), and the whole path through a real worker against the sandboxes over HTTP."""

from __future__ import annotations

import json
import random
import time
from datetime import date, datetime, timedelta, timezone as dt_tz
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from apps.canonical import amendments
from apps.canonical.models import Engagement, EngagementChange, ExternalId
from apps.canonical.ownership import NotSystemOfRecord
from apps.demo.deals import make_opportunity
from apps.forecast.models import ForecastRefresh
from apps.sandbox.models import SandboxObject
from apps.sync import services
from apps.sync.intake import process_inbox
from apps.sync.models import Connection, InboundEvent, SyncRecord
from apps.sync.workflows import change_order as co

from tests import builders as fx
from tests.worker import run_worker, sandbox_count
from tests.callbacks import assert_only_rejection, deal_event, outbound, post_hubspot, post_salesforce, salesforce_id

T1 = datetime(2026, 11, 2, 9, 0, tzinfo=dt_tz.utc)
T2 = datetime(2026, 11, 9, 9, 0, tzinfo=dt_tz.utc)


def amendment_event(event_id=5001, deal_id=77, value="approved", **overrides) -> dict:
    """HubSpot's event for a deal whose amendment_status property changed."""
    return deal_event(event_id, deal_id, subscriptionId=9, propertyName="amendment_status", propertyValue=value,
                      **overrides)


def amendment_fields(amendment_id="a0A5g000001AMD1", opportunity_id="006SB0000000000001", **overrides) -> dict:
    fields = {"Id": amendment_id, "Opportunity__c": opportunity_id, "Status__c": "Approved",
              "New_Contract_Value__c": "150000.00", "New_Start_Date__c": "2026-12-01",
              "New_End_Date__c": "2027-06-30", "Rate_Card__c": "Standard USD 2026",
              "Billing_Schedule__c": "monthly in arrears", "SystemModstamp": "2026-11-20T10:15:00.000Z"}
    fields.update(overrides)
    return fields


def amendment_message(*notifications) -> bytes:
    return outbound(notifications, sobject_type="Contract_Amendment__c")


# ---------------------------------------------------------------- callbacks


@pytest.mark.django_db
class TestCallbacks:
    def test_an_approved_hubspot_amendment_starts_a_change_order_per_deal(self, connections):
        event = amendment_event(event_id=5001, deal_id=77, occurredAt=1795000000000)
        response = post_hubspot(APIClient(), [event])

        assert response.status_code == 202, response.content
        stored = InboundEvent.objects.get()
        assert (stored.status, stored.workflow, stored.source_key, stored.event_type) == (
            "received", "change_order", "amendment:deal-77", "deal.propertyChange:amendment_status")
        assert stored.payload == {"deal_id": "77", "portal_id": 62515, "approved_at": "2026-11-18T11:06:40.000000Z",
                                  "source_modified_at": "2026-11-18T11:06:40.000000Z"}
        assert process_inbox()["records"] == 1
        record = SyncRecord.objects.get()
        assert (record.workflow, record.stage, record.status) == ("change_order", "fetch", "pending")

    def test_an_amendment_status_other_than_approved_is_ignored(self, connections):
        response = post_hubspot(APIClient(), [amendment_event(value="pending_approval")])

        assert response.status_code == 200
        stored = InboundEvent.objects.get()
        assert stored.status == "ignored" and "'pending_approval' is not approved" in stored.reason
        process_inbox()
        assert not SyncRecord.objects.exists()

    @pytest.mark.parametrize("overrides, reason", [({"objectId": ""}, "objectId is missing"),
                                                   ({"occurredAt": "yesterday"}, "occurredAt must be")])
    def test_an_approved_amendment_event_without_what_it_needs_is_refused(self, connections, overrides, reason):
        response = post_hubspot(APIClient(), [amendment_event(**overrides)])
        assert_only_rejection(response, 400, reason_contains=reason)

    def test_an_approved_salesforce_amendment_is_acked_and_stored_as_a_trigger(self, connections):
        response = post_salesforce(APIClient(), amendment_message(("04lAMD1", amendment_fields())))

        assert response.status_code == 200 and b"<Ack>true</Ack>" in response.content
        stored = InboundEvent.objects.get()
        assert (stored.workflow, stored.source_key, stored.event_type) == (
            "change_order", "amendment:a0A5g000001AMD1", "outbound_message:Contract_Amendment__c")
        # the message's values are not the amendment: the fetch stage reads it through the REST API
        assert stored.payload == {"amendment_id": "a0A5g000001AMD1", "notification_id": "04lAMD1",
                                  "source_modified_at": "2026-11-20T10:15:00.000Z"}
        # redelivered until acked: stored once
        post_salesforce(APIClient(), amendment_message(("04lAMD1", amendment_fields())))
        assert InboundEvent.objects.get().deliveries == 2
        assert process_inbox()["records"] == 1

    def test_an_amendment_not_approved_is_acked_and_ignored(self, connections):
        response = post_salesforce(APIClient(), amendment_message(("04lAMD2", amendment_fields(Status__c="Draft"))))

        assert response.status_code == 200 and b"<Ack>true</Ack>" in response.content
        stored = InboundEvent.objects.get()
        assert stored.status == "ignored" and "'Draft' is not Approved" in stored.reason

    def test_an_approved_amendment_without_an_id_is_refused(self, connections):
        response = post_salesforce(APIClient(), amendment_message(("04lAMD3", amendment_fields(Id=""))))

        event = assert_only_rejection(response, 400, connection="salesforce", reason_contains="has no Id")
        assert b"soapenv:Fault" in response.content and event.http_status == 400


# ---------------------------------------------------------------- the rules


def _payload(e: Engagement | None = None, **overrides) -> dict:
    p = {"amendment_id": "AMD-1", "opportunity_id": "opp-1", "amended_amount": "150000.00",
         "amended_start_date": "2026-02-01", "amended_end_date": "2027-01-31", "amended_rate_card": "",
         "amended_billing_schedule": "", "approved_at": T1.isoformat()}
    p.update(overrides)
    return p


@pytest.mark.django_db
class TestRules:
    @pytest.fixture
    def eng(self, firm):
        return fx.engagement(value="100000.00", opportunity=("salesforce", "opp-1"), card=fx.rate_card())

    def reasons(self, payload):
        return [(p.reason, p.fields) for p in co.validate(payload, source_kind="salesforce")]

    def test_a_good_amendment_passes(self, eng):
        fx.rate_card("Premium USD 2027", "USD")
        assert co.validate(_payload(amended_rate_card="Premium USD 2027",
                                    amended_billing_schedule="quarterly in advance"), source_kind="salesforce") == []

    def test_a_value_below_what_is_already_billed_is_held_for_finance_naming_both_figures(self, eng):
        fx.invoice(eng, "60000.00", period=date(2026, 3, 1))
        fx.invoice(eng, "5000.00", period=date(2026, 4, 1), status="void")  # void: not billed
        fx.time_entry(eng, date(2026, 5, 4), "10.00", "1500.50")  # posted T&M time not invoiced yet: billed
        fx.time_entry(eng, date(2026, 5, 5), "4.00", "600.00", status="priced")  # not posted: not billed

        problems = co.validate(_payload(amended_amount="61500.49"), source_kind="salesforce")

        assert [(p.reason, p.fields) for p in problems] == [("contract_value_below_invoiced", ["amended_amount"])]
        assert ("The amended contract value of 61,500.49 USD is below the 61,500.50 USD already invoiced on "
                f"{eng.code} (Acme rollout).") in problems[0].message
        assert co.WORKFLOW.owner_team("contract_value_below_invoiced") == "finance_ops"
        assert co.validate(_payload(amended_amount="61500.50"), source_kind="salesforce") == []  # equal is fine

    def test_an_unknown_engagement_is_held_and_can_be_named_by_code(self, eng):
        assert self.reasons(_payload(opportunity_id="opp-unknown")) == [("unknown_engagement", ["engagement_code"])]
        assert co.validate(_payload(opportunity_id="opp-unknown", engagement_code=eng.code.lower()),
                           source_kind="salesforce") == []

    def test_an_unknown_rate_card_or_one_in_another_currency_is_held(self, eng):
        fx.rate_card("Standard EUR 2026", "EUR")
        assert self.reasons(_payload(amended_rate_card="Platinum")) == [("unknown_rate_card", ["amended_rate_card"])]
        [problem] = co.validate(_payload(amended_rate_card="Standard EUR 2026"), source_kind="salesforce")
        assert problem.reason == "unknown_rate_card" and "prices in EUR" in problem.message

    @pytest.mark.parametrize("overrides, expected", [
        ({"amended_end_date": "2027-02-30"}, [("invalid_dates", ["amended_end_date"])]),
        ({"amended_start_date": "2027-03-01"}, [("invalid_dates", ["amended_end_date", "amended_start_date"])]),
        ({"amended_start_date": "", "amended_end_date": "2025-12-31"},  # before the current start (2026-01-01)
         [("invalid_dates", ["amended_end_date", "amended_start_date"])]),
        ({"amended_billing_schedule": "whenever"}, [("unknown_billing_schedule", ["amended_billing_schedule"])]),
        ({"amended_amount": "-5"}, [("payload_schema_invalid", ["amended_amount"])]),
        ({"amended_amount": "100.005"}, [("payload_schema_invalid", ["amended_amount"])]),
        ({"amended_amount": "", "amended_start_date": "", "amended_end_date": ""},
         [("payload_schema_invalid", ["amended_amount"])]),
        ({"amendment_id": ""}, [("payload_schema_invalid", ["amendment_id"])]),
    ])
    def test_bad_values_are_held_with_the_field_named(self, eng, overrides, expected):
        assert self.reasons(_payload(**overrides)) == expected

    def test_the_erp_billing_schedule_mapping(self):
        assert co.erp_billing_schedule("On  Milestones", "fixed_fee") == {"scheduleType": {"id": "FIXED_BID_MILESTONE"}}
        assert co.erp_billing_schedule("monthly in arrears", "t_and_m") == {
            "scheduleType": {"id": "TIME_AND_MATERIAL"}, "frequency": {"id": "MONTHLY"}, "inArrears": True}
        assert co.erp_billing_schedule("quarterly in advance", "retainer") == {
            "scheduleType": {"id": "STANDARD"}, "frequency": {"id": "QUARTERLY"}, "inArrears": False}
        assert co.erp_billing_schedule("semi-annually in advance", "fixed_fee")["scheduleType"] == {
            "id": "FIXED_BID_INTERVAL"}
        assert co.erp_billing_schedule("every other tuesday", "t_and_m") is None

    def apply(self, eng, change_id, approved_at, **values):
        return amendments.amendment_apply(engagement_id=eng.pk, change_id=change_id, source_system="salesforce",
                                          source_role="crm", approved_at=approved_at, values=values)

    def test_the_change_is_applied_with_its_history(self, eng):
        outcome, change = self.apply(eng, "AMD-1", T1, contract_value="150000.00", end_date="2027-01-31",
                                     rate_card="Standard USD 2026", billing_schedule="quarterly in advance")

        assert outcome == "applied"
        eng.refresh_from_db()
        assert (eng.contract_value, eng.end_date, eng.billing_schedule) == (
            Decimal("150000.00"), date(2027, 1, 31), "quarterly in advance")
        assert change.before == {"contract_value": "100000.00", "start_date": "2026-01-01",
                                 "end_date": "2026-12-31", "rate_card": "Standard USD 2026",
                                 "billing_schedule": "monthly in arrears"}
        assert change.after == {"contract_value": "150000.00", "start_date": "2026-01-01",
                                "end_date": "2027-01-31", "rate_card": "Standard USD 2026",
                                "billing_schedule": "quarterly in advance"}
        assert (change.status, change.approved_at, change.source_system) == ("applied", T1, "salesforce")

    def test_a_redelivered_amendment_applies_once(self, eng):
        self.apply(eng, "AMD-1", T1, contract_value="150000.00")
        outcome, change = self.apply(eng, "AMD-1", T1, contract_value="150000.00")

        assert outcome == "already_applied"
        assert EngagementChange.objects.filter(engagement=eng).count() == 1
        assert change.before["contract_value"] == "100000.00"  # the history still says where it came from

    def test_an_older_amendment_never_overwrites_a_newer_one(self, eng):
        self.apply(eng, "AMD-2", T2, contract_value="180000.00")
        outcome, newer = self.apply(eng, "AMD-1", T1, contract_value="150000.00")

        assert (outcome, newer.change_id) == ("superseded", "AMD-2")
        eng.refresh_from_db()
        assert eng.contract_value == Decimal("180000.00")
        assert list(EngagementChange.objects.values_list("change_id", flat=True)) == ["AMD-2"]

    def test_a_later_version_of_the_same_amendment_is_applied_and_an_earlier_one_is_not(self, eng):
        self.apply(eng, "AMD-1", T1, contract_value="150000.00")
        assert self.apply(eng, "AMD-1", T2, contract_value="155000.00")[0] == "applied"  # corrected, re-approved
        assert self.apply(eng, "AMD-1", T1, contract_value="150000.00")[0] == "superseded"  # the old version, late
        eng.refresh_from_db()
        assert eng.contract_value == Decimal("155000.00")
        assert EngagementChange.objects.get().after["contract_value"] == "155000.00"

    def test_only_the_crm_may_change_the_engagement(self, eng):
        with pytest.raises(NotSystemOfRecord):
            amendments.amendment_apply(engagement_id=eng.pk, change_id="AMD-1", source_system="kantata",
                                       source_role="psa", approved_at=T1, values={"contract_value": "1.00"})

    def test_a_change_held_for_finance_shows_in_the_history_until_it_is_applied(self, eng):
        amendments.amendment_hold(engagement_id=eng.pk, change_id="AMD-1", source_system="salesforce",
                                  approved_at=T1, values={"contract_value": "50000.00"})
        held = EngagementChange.objects.get()
        assert (held.status, held.after["contract_value"], held.before["contract_value"]) == (
            "held", "50000.00", "100000.00")

        self.apply(eng, "AMD-1", T1, contract_value="65000.00")

        change = EngagementChange.objects.get()
        assert (change.status, change.after["contract_value"]) == ("applied", "65000.00")

    def test_the_queue_summary(self):
        s = co.summary({"amendment_id": "AMD-9", "engagement_code": "ENG-000042", "amended_amount": "1.00",
                        "currency": "EUR"})
        assert s == {"title": "Change order AMD-9 · ENG-000042", "amount": "1.00", "currency": "EUR"}
        assert co.WORKFLOW.priority({}) == 2 and co.WORKFLOW.owner_team("unknown_rate_card") == "pmo"


# ---------------------------------------------------------------- end to end


pytestmark_e2e = pytest.mark.django_db(transaction=True)


def _client(user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


def _won(deliverer, via: str, seed: int) -> Engagement:
    """A closed-won deal taken through quote-to-project: customer and job in NetSuite, workspace in Kantata."""
    opp = make_opportunity(random.Random(seed), "good")
    deliverer.deliver(opp, via=via)
    run_worker()
    engagement = Engagement.objects.get(name=opp.name)
    fx.rate_card(f"Standard {engagement.currency} 2026", engagement.currency)
    Connection.objects.filter(slug="anaplan").update(settings={"poll_seconds": 0.05})
    return engagement


def _opportunity_id(e: Engagement, system: str) -> str:
    return ExternalId.objects.get(system=system, object_type="opportunity", object_id=e.pk).external_id


def _workspace(e: Engagement) -> SandboxObject:
    ws = ExternalId.objects.get(system="kantata", object_type="workspace", object_id=e.pk).external_id
    return SandboxObject.objects.get(system="kantata", object_type="workspace", pk=ws)


def _send_amendment(deliverer, live_server, fields: dict):
    """The amendment as Salesforce holds it (what Handoff reads), then its Outbound Message."""
    deliverer.store_salesforce("Contract_Amendment__c", fields)
    return deliverer.send_salesforce([(f"04l{fields['Id'][3:]}", fields)], sobject_type="Contract_Amendment__c")


@pytestmark_e2e
def test_a_hubspot_amendment_updates_the_engagement_psa_erp_and_forecast_once(deliverer):
    e = _won(deliverer, "hubspot", 41)
    deal_id = _opportunity_id(e, "hubspot")
    today = date.today()
    deliverer._sandbox("hubspot", "PATCH", f"/crm/v3/objects/deals/{deal_id}", {"properties": {
        "amendment_status": "approved", "amendment_id": "AMD-100", "amended_amount": "987654.32",
        "amended_start_date": today.isoformat(), "amended_end_date": (today + timedelta(days=180)).isoformat(),
        "amended_rate_card": f"Standard {e.currency} 2026", "amended_billing_schedule": "quarterly in advance"}})
    events = [amendment_event(event_id=deliverer.event_seq + 1, deal_id=int(deal_id))]

    assert deliverer.send_hubspot(events).status_code == 202
    run_worker()

    record = SyncRecord.objects.get(workflow="change_order")
    assert record.status == "succeeded", record.message
    assert record.context["outcome"] == "applied" and record.title == f"Change order AMD-100 · {e.code}"
    e.refresh_from_db()
    assert (e.contract_value, e.end_date, e.rate_card.name, e.billing_schedule) == (
        Decimal("987654.32"), today + timedelta(days=180), f"Standard {e.currency} 2026", "quarterly in advance")
    change = EngagementChange.objects.get(engagement=e)
    assert (change.change_id, change.status, change.after["contract_value"]) == ("AMD-100", "applied", "987654.32")
    assert change.before["contract_value"] == f"{Decimal(change.before['contract_value']):.2f}" != "987654.32"
    # PSA budget: updated once (created by quote-to-project, then this one PUT)
    ws = _workspace(e)
    assert (ws.data["price"], ws.data["due_date"], ws.writes) == ("987654.32", e.end_date.isoformat(), 2)
    # ERP: a billing schedule upserted by external id, and the project (job) pointing at it
    schedule = SandboxObject.objects.get(system="netsuite", object_type="billingSchedule")
    assert schedule.external_key == f"HO-BS-{e.key}"
    expected_type = {"t_and_m": "TIME_AND_MATERIAL", "retainer": "STANDARD"}.get(e.contract_type, "FIXED_BID_INTERVAL")
    assert (schedule.data["scheduleType"], schedule.data["frequency"], schedule.data["inArrears"]) == (
        {"id": expected_type}, {"id": "QUARTERLY"}, False)
    job = SandboxObject.objects.get(system="netsuite", object_type="job")
    assert job.data["billingSchedule"] == {"id": str(schedule.pk)}
    assert (job.data["custentity_handoff_contract_value"], job.data["projectedEndDate"]) == (
        "987654.32", e.end_date.isoformat())
    # forecast: this engagement's refresh ran through Anaplan
    refresh = ForecastRefresh.objects.get()
    assert (refresh.trigger, refresh.engagement, refresh.status) == ("change_order", e, "succeeded")
    assert record.context["forecast_refresh_id"] == refresh.pk
    row = SandboxObject.objects.get(system="anaplan", object_type="actuals_row",
                                    external_key__contains=f":{e.code}:{today:%Y-%m}")
    assert (row.data["Contract Value"], row.data["Backlog"]) == ("987654.32", "987654.32")

    # HubSpot redelivers the webhook: counted, nothing runs again
    response = deliverer.send_hubspot(events)
    assert json.loads(response.content) == {"accepted": 0, "duplicates": 1, "ignored": 0}
    run_worker()
    assert _workspace(e).writes == 2 and EngagementChange.objects.count() == 1 and ForecastRefresh.objects.count() == 1
    assert sandbox_count("netsuite", "billingSchedule") == 1

    # a second amendment on the same deal, approved later: the deal's record runs again with the new amendment
    deliverer._sandbox("hubspot", "PATCH", f"/crm/v3/objects/deals/{deal_id}", {"properties": {
        "amendment_id": "AMD-101", "amended_amount": "990000.00", "amended_billing_schedule": ""}})
    time.sleep(0.01)
    deliverer.send_hubspot([amendment_event(event_id=deliverer.event_seq + 2, deal_id=int(deal_id))])
    run_worker()
    record.refresh_from_db()
    assert record.status == "succeeded" and record.current_payload["amendment_id"] == "AMD-101"
    e.refresh_from_db()
    assert e.contract_value == Decimal("990000.00") and e.billing_schedule == "quarterly in advance"
    assert list(EngagementChange.objects.order_by("applied_at").values_list("change_id", flat=True)) == [
        "AMD-100", "AMD-101"]
    assert _workspace(e).data["price"] == "990000.00" and sandbox_count("netsuite", "billingSchedule") == 1


@pytestmark_e2e
def test_a_change_below_what_is_invoiced_is_held_for_finance_fixed_and_resubmitted(deliverer, live_server, alice,
                                                                                  bob):
    e = _won(deliverer, "salesforce", 42)
    fx.invoice(e, "60000.00", period=date.today().replace(day=1))
    fields = amendment_fields(amendment_id=salesforce_id("a0ASBHELD1"), opportunity_id=_opportunity_id(e, "salesforce"),
                              New_Contract_Value__c="50000.00", Rate_Card__c=f"Standard {e.currency} 2026",
                              New_Start_Date__c=e.start_date.isoformat(),
                              New_End_Date__c=(e.start_date + timedelta(days=90)).isoformat())

    assert b"<Ack>true</Ack>" in _send_amendment(deliverer, live_server, fields).content
    run_worker()

    record = SyncRecord.objects.get(workflow="change_order")
    assert record.status == "held" and record.stage == "validate"
    assert (record.reason_code, record.owner_team, record.fault_fields) == (
        "contract_value_below_invoiced", "finance_ops", ["amended_amount"])
    assert f"50,000.00 {e.currency}" in record.message and f"60,000.00 {e.currency}" in record.message
    assert (record.amount, record.currency) == (Decimal("50000.00"), e.currency)
    held = EngagementChange.objects.get(engagement=e)
    assert (held.status, held.after["contract_value"]) == ("held", "50000.00")
    e.refresh_from_db()
    assert e.contract_value != Decimal("50000.00")
    assert _workspace(e).writes == 1 and sandbox_count("netsuite", "billingSchedule") == 0  # nothing downstream

    page = _client(bob).get(f"/records/{record.pk}/")
    assert page.status_code == 200 and "amended contract value" in page.content.decode()

    with pytest.raises(services.NotAllowed):  # PMO does not own it
        services.record_resubmit(record_id=record.pk, actor=alice, expected_version=record.version,
                                 changes={"amended_amount": "65000.00"})
    with pytest.raises(services.StillInvalid):  # still below what is invoiced
        services.record_resubmit(record_id=record.pk, actor=bob, expected_version=record.version,
                                 changes={"amended_amount": "59999.99"})
    services.record_resubmit(record_id=record.pk, actor=bob, expected_version=record.version,
                             changes={"amended_amount": "65000.00"}, reason="agreed with sales: 65k")
    run_worker()

    record.refresh_from_db()
    assert record.status == "succeeded", record.message
    e.refresh_from_db()
    assert e.contract_value == Decimal("65000.00")
    change = EngagementChange.objects.get(engagement=e)
    assert (change.status, change.after["contract_value"]) == ("applied", "65000.00")
    ws = _workspace(e)
    assert (ws.data["price"], ws.writes) == ("65000.00", 2)
    assert SandboxObject.objects.get(system="netsuite", object_type="billingSchedule").data["scheduleType"] in (
        {"id": "TIME_AND_MATERIAL"}, {"id": "FIXED_BID_INTERVAL"}, {"id": "STANDARD"})
    assert ForecastRefresh.objects.get(engagement=e).status == "succeeded"


@pytestmark_e2e
def test_an_older_amendment_arriving_late_never_overwrites_the_newer_one(deliverer, live_server):
    e = _won(deliverer, "salesforce", 43)
    opp = _opportunity_id(e, "salesforce")
    new_id, old_id = salesforce_id("a0ASBNEW02"), salesforce_id("a0ASBOLD01")
    newer = amendment_fields(amendment_id=new_id, opportunity_id=opp, New_Contract_Value__c="400000.00",
                             Rate_Card__c="", New_Start_Date__c="", New_End_Date__c="",
                             SystemModstamp="2026-11-21T09:00:00.000Z")
    older = amendment_fields(amendment_id=old_id, opportunity_id=opp, New_Contract_Value__c="300000.00",
                             Rate_Card__c="", New_Start_Date__c="", New_End_Date__c="",
                             SystemModstamp="2026-11-20T09:00:00.000Z")

    _send_amendment(deliverer, live_server, newer)
    run_worker()
    _send_amendment(deliverer, live_server, older)
    run_worker()

    late = SyncRecord.objects.get(source_key=f"amendment:{old_id}")
    assert late.status == "succeeded"
    assert (late.context["outcome"], late.context["superseded_by"]) == ("superseded", new_id)
    e.refresh_from_db()
    assert e.contract_value == Decimal("400000.00")
    assert list(EngagementChange.objects.values_list("change_id", flat=True)) == [new_id]
    ws = _workspace(e)
    assert (ws.data["price"], ws.writes) == ("400000.00", 2)  # the late one wrote nothing downstream
    assert ForecastRefresh.objects.count() == 1
