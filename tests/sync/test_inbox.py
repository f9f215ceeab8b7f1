"""The inbox job: verified callback events become sync records — one per source object and workflow, never twice,
rejected and ignored events left alone."""

from __future__ import annotations

import pytest

from apps.sync.intake import process_inbox
from apps.sync.models import InboundEvent, SyncRecord

from tests.callbacks import deal_event, opportunity_fields, outbound, post_hubspot, post_salesforce, salesforce_id

pytestmark = pytest.mark.django_db


# ------------------------------------------------------------------ the inbox job


def test_processing_the_inbox_creates_one_record_per_deal(api, connections):
    post_hubspot(api, [deal_event(event_id=1, deal_id=500)])
    post_hubspot(api, [deal_event(event_id=2, deal_id=500)])  # a second closed-won event for the same deal
    post_hubspot(api, [deal_event(event_id=3, deal_id=501)])
    assert InboundEvent.objects.filter(status="received").count() == 3

    counts = process_inbox()

    assert counts["events"] == 3 and counts["records"] == 2
    assert sorted(SyncRecord.objects.values_list("source_key", flat=True)) == ["deal:500", "deal:501"]
    record = SyncRecord.objects.get(source_key="deal:500")
    assert record.workflow == "quote_to_project"
    assert record.status == SyncRecord.Status.PENDING
    assert record.source_connection == connections["hubspot"]
    assert {k: record.original_payload[k] for k in ("deal_id", "portal_id")} == {"deal_id": "500",
                                                                                  "portal_id": 62515}
    assert set(record.events.values_list("event_id", flat=True)) == {"1", "2"}
    assert set(InboundEvent.objects.values_list("status", flat=True)) == {"processed"}
    assert not InboundEvent.objects.filter(record__isnull=True).exists()


def test_processing_the_inbox_twice_creates_nothing_new(api, connections):
    post_hubspot(api, [deal_event(event_id=1, deal_id=600)])
    process_inbox()
    post_hubspot(api, [deal_event(event_id=1, deal_id=600)])  # redelivered after processing
    post_hubspot(api, [deal_event(event_id=9, deal_id=600)])  # a new event for the same deal

    counts = process_inbox()

    assert counts["events"] == 1 and counts["records"] == 0  # "records" counts new records: it joined the old one
    record = SyncRecord.objects.get()
    assert InboundEvent.objects.get(event_id="1").deliveries == 2
    assert set(record.events.values_list("event_id", flat=True)) == {"1", "9"}
    assert process_inbox()["events"] == 0
    assert SyncRecord.objects.count() == 1


def test_processing_the_inbox_makes_one_record_per_salesforce_opportunity(api, connections):
    same = salesforce_id("006SAME")
    fields = opportunity_fields(opp_id=same)
    post_salesforce(api, outbound([("04lX1", fields)]))
    post_salesforce(api, outbound([("04lX2", fields), ("04lX1", fields)]))

    process_inbox()

    record = SyncRecord.objects.get()
    assert record.source_key == f"opportunity:{same}"
    assert record.source_connection == connections["salesforce"]
    assert record.current_payload["opportunity_id"] == same
    assert InboundEvent.objects.get(event_id="04lX1").deliveries == 2
    assert record.events.count() == 2


def test_the_same_object_id_from_two_crms_makes_two_records(api, connections):
    both = "123456789012345"  # a HubSpot object id, and a (15-character) Salesforce id
    post_hubspot(api, [deal_event(event_id=1, deal_id=both)])
    post_salesforce(api, outbound([("04l1", opportunity_fields(opp_id=both))]))

    process_inbox()

    assert sorted(SyncRecord.objects.values_list("source_connection__slug", "source_key")) == [
        ("hubspot", f"deal:{both}"), ("salesforce", f"opportunity:{both}")]


def test_processing_the_inbox_leaves_ignored_and_rejected_events_alone(api, connections):
    post_hubspot(api, [deal_event(event_id=1, stage="closedlost")])
    post_hubspot(api, [deal_event(event_id=2)], sig="forged")

    assert process_inbox()["events"] == 0

    assert SyncRecord.objects.count() == 0
    assert dict(InboundEvent.objects.values_list("status", "record")) == {"ignored": None, "rejected": None}
