"""Circuit breaker per connection, and events for one object applied in source order."""

from __future__ import annotations

import random

import pytest
from django.utils import timezone

from apps.demo.deals import make_opportunity
from apps.sync import engine, intake, jobs, sweeper
from apps.sync.models import Attempt, Connection, InboundEvent, SyncRecord

from tests.callbacks import opportunity_fields, outbound, post_salesforce, salesforce_id
from tests.worker import inject, run_worker, sandbox_count


@pytest.mark.django_db(transaction=True)
def test_the_circuit_opens_after_consecutive_failures_records_wait_and_a_probe_closes_it(deliverer):
    Connection.objects.filter(kind="kantata").update(circuit_threshold=3, circuit_cooldown_seconds=0,
                                                     max_attempts=50)
    inject("kantata", fail_next_count=3, fail_next_status=503)
    rng = random.Random(31)
    for _ in range(6):
        deliverer.deliver(make_opportunity(rng, "good"), via="hubspot")
    jobs.process_inbox()
    for _ in range(4):  # retries come due quickly (short backoff in tests)
        engine.drain("default")
        SyncRecord.objects.filter(status="retrying").update(next_attempt_at=timezone.now())

    kantata = Connection.objects.get(kind="kantata")
    assert kantata.paused and kantata.paused_by == "circuit"
    assert "3 consecutive failures" in kantata.paused_reason
    waiting = SyncRecord.objects.filter(reason_code="connection_paused")
    assert waiting.exists()
    # records that waited spent no attempts on the paused system
    assert Attempt.objects.filter(system="kantata").count() == 3 + 0
    assert not SyncRecord.objects.filter(status__in=["held", "dead"]).exists()

    # the sweeper probes the open circuit (cool-down 0): the system answers again, so it closes
    result = sweeper.sweep()
    assert result["circuits"] == {"kantata": "closed"}
    SyncRecord.objects.filter(status="retrying").update(next_attempt_at=timezone.now())
    run_worker()
    assert set(SyncRecord.objects.values_list("status", flat=True)) == {"succeeded"}
    assert sandbox_count("kantata", "workspace") == 6
    kantata.refresh_from_db()
    assert not kantata.paused and kantata.consecutive_failures == 0


@pytest.mark.django_db(transaction=True)
def test_a_probe_that_still_fails_keeps_the_circuit_open(sandboxes):
    Connection.objects.filter(kind="netsuite").update(paused=True, paused_by="circuit", circuit_cooldown_seconds=0,
                                                      paused_at=timezone.now())
    inject("netsuite", fail_next_count=1, fail_next_status=500)
    assert sweeper.sweep()["circuits"]["netsuite"].startswith("still failing")
    assert Connection.objects.get(kind="netsuite").paused
    # an admin's pause is never closed by a probe
    Connection.objects.filter(kind="kantata").update(paused=True, paused_by="admin", paused_at=timezone.now())
    assert "kantata" not in sweeper.sweep().get("circuits", {})


def _sf_event(conn, opp_id: str, modstamp: str, nid: str) -> bytes:
    """A notification of the opportunity's version `modstamp`; its notification id (in the record's payload)
    shows which notification a record was built from."""
    return outbound([(nid, opportunity_fields(5, salesforce_id(opp_id), SystemModstamp=modstamp))])


@pytest.mark.django_db
def test_an_older_event_never_overwrites_newer_data(connections, client):
    newer = _sf_event(connections, "006A", "2026-11-23T10:00:00.000Z", "04l1")
    older = _sf_event(connections, "006A", "2026-11-23T09:00:00.000Z", "04l2")
    # delivered out of order, in one batch and across batches
    post_salesforce(client, newer)
    post_salesforce(client, older)
    intake.process_inbox()
    record = SyncRecord.objects.get()
    assert record.current_payload["notification_id"] == "04l1"
    post_salesforce(client, _sf_event(connections, "006A", "2026-11-23T08:00:00.000Z", "04l3"))
    intake.process_inbox()
    record.refresh_from_db()
    assert record.current_payload["notification_id"] == "04l1"
    assert record.context["source_modified_at"] == "2026-11-23T10:00:00.000Z"


@pytest.mark.django_db
def test_a_newer_event_refreshes_a_held_record_nobody_has_edited(connections, client):
    post_salesforce(client, _sf_event(connections, "006B", "2026-11-23T09:00:00.000Z", "04l4"))
    intake.process_inbox()
    SyncRecord.objects.update(status="held", reason_code="missing_legal_entity")
    post_salesforce(client, _sf_event(connections, "006B", "2026-11-23T11:00:00.000Z", "04l5"))
    result = intake.process_inbox()
    record = SyncRecord.objects.get()
    assert result["refreshed"] == 1
    assert (record.status, record.reason_code, record.current_payload["notification_id"]) == ("pending", "", "04l5")


@pytest.mark.django_db
def test_a_newer_event_for_a_record_being_worked_waits_for_it_and_is_then_applied(connections, client):
    """A correction that arrives while a worker holds the record is neither lost nor written over its work."""
    post_salesforce(client, _sf_event(connections, "006C", "2026-11-23T09:00:00.000Z", "04l6"))
    intake.process_inbox()
    SyncRecord.objects.update(status="in_progress")  # a worker has claimed it
    post_salesforce(client, _sf_event(connections, "006C", "2026-11-23T11:00:00.000Z", "04l7"))

    result = intake.process_inbox()
    record = SyncRecord.objects.get()
    assert result["deferred"] == 1 and result["refreshed"] == 0
    assert record.current_payload["notification_id"] == "04l6" and record.status == "in_progress"
    newer = InboundEvent.objects.get(event_id__endswith="04l7")
    assert newer.status == "received" and newer.record_id is None
    assert sweeper.sweep().get("inbox")  # the sweeper keeps waking the inbox for it

    # the worker holds the record (missing legal entity); the waiting correction then starts it over
    SyncRecord.objects.update(status="held", reason_code="missing_legal_entity")
    result = intake.process_inbox()
    record.refresh_from_db()
    newer.refresh_from_db()
    assert result["refreshed"] == 1 and newer.status == "processed" and newer.record_id == record.pk
    assert (record.status, record.reason_code, record.current_payload["notification_id"]) == ("pending", "", "04l7")


@pytest.mark.django_db
def test_an_event_no_newer_than_the_record_in_progress_is_linked_at_once(connections, client):
    post_salesforce(client, _sf_event(connections, "006D", "2026-11-23T09:00:00.000Z", "04l8"))
    intake.process_inbox()
    SyncRecord.objects.update(status="in_progress")
    # an older one, delivered late
    post_salesforce(client, _sf_event(connections, "006D", "2026-11-23T08:00:00.000Z", "04l9"))
    result = intake.process_inbox()
    assert result.get("deferred", 0) == 0
    assert InboundEvent.objects.get(event_id__endswith="04l9").status == "processed"
    assert SyncRecord.objects.get().current_payload["notification_id"] == "04l8"
