"""The engine's guarantees that do not need the sandboxes: claims, leases, wake-ups, the sweeper, the inbox."""

from __future__ import annotations

from datetime import timedelta

import django_rq
import pytest
from django.utils import timezone

from apps.sync import engine, intake, sweeper, wakeup
from apps.sync.models import InboundEvent, SyncRecord

from tests.builders import sync_records

pytestmark = pytest.mark.django_db


def due_records(connections, n, *, source="hubspot", **kw):
    """`n` quote-to-project records due now (claimable)."""
    return sync_records(connections, n, source=source, next_attempt_at=timezone.now(), **kw)


def test_two_claims_never_take_the_same_record(connections):
    due_records(connections, 10)
    t1, first = engine.claim(priorities=[2], limit=6)
    t2, second = engine.claim(priorities=[2], limit=6)
    assert len(first) == 6 and len(second) == 4
    assert not {r.pk for r in first} & {r.pk for r in second}
    assert SyncRecord.objects.filter(lease_token=t1).count() == 6
    assert engine.claim(priorities=[2], limit=6)[1] == []


def test_a_record_whose_worker_died_is_claimed_again_after_its_lease(connections):
    [record] = due_records(connections, 1)
    token, _ = engine.claim(priorities=[2], limit=1)
    assert engine.claim(priorities=[2], limit=1)[1] == []
    SyncRecord.objects.filter(pk=record.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    token2, [again] = engine.claim(priorities=[2], limit=1)
    assert again.pk == record.pk and token2 != token


def test_the_old_worker_cannot_write_after_losing_its_lease(connections):
    [record] = due_records(connections, 1)
    token, [claimed] = engine.claim(priorities=[2], limit=1)
    SyncRecord.objects.filter(pk=record.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    engine.claim(priorities=[2], limit=1)
    with pytest.raises(engine.LeaseLost):
        engine._commit(claimed, token, {"stage": "erp_customer"})
    record.refresh_from_db()
    assert record.stage == "validate"


def test_a_retry_is_not_claimed_before_it_is_due(connections):
    due_records(connections, 1, status="retrying")
    SyncRecord.objects.update(next_attempt_at=timezone.now() + timedelta(minutes=1))
    assert engine.claim(priorities=[2], limit=5)[1] == []


def test_p1_records_are_claimed_from_the_high_queue_only(connections):
    due_records(connections, 2, priority=1)
    assert engine.claim(priorities=engine.QUEUE_PRIORITIES["default"], limit=5)[1] == []
    assert len(engine.claim(priorities=engine.QUEUE_PRIORITIES["high"], limit=5)[1]) == 2


def test_wake_ups_are_debounced(connections):
    queue = django_rq.get_queue("high")
    assert wakeup.enqueue_now("inbox") is True
    assert wakeup.enqueue_now("inbox") is False
    assert queue.count == 1
    wakeup.clear("inbox")
    assert wakeup.enqueue_now("inbox") is True
    assert queue.count == 2


def test_the_sweeper_recovers_work_whose_wake_up_was_lost(connections):
    due_records(connections, 3)
    # no wake-up was ever sent (lost enqueue / Redis wiped): the sweeper finds the due rows
    assert sweeper.sweep() == {"records:default": True}
    assert django_rq.get_queue("default").count == 1


def test_the_sweeper_does_nothing_when_nothing_is_due(connections):
    due_records(connections, 1, status="held")
    assert sweeper.sweep() == {}


def test_the_inbox_turns_events_into_one_record_per_source_object(connections, django_capture_on_commit_callbacks):
    conn = connections["hubspot"]
    from apps.connectors.callbacks import EventSpec

    specs = [EventSpec(event_id=str(i), event_type="deal.propertyChange:dealstage", body={}, workflow="quote_to_project",
                       source_key=f"deal:{i % 3}", payload={"deal_id": str(i % 3)}, title=f"deal {i % 3}")
             for i in range(9)]
    counts = intake.store_events(conn, specs, {}, 202)
    assert counts["accepted"] == 9
    assert intake.store_events(conn, specs[:2], {}, 202)["duplicate"] == 2

    with django_capture_on_commit_callbacks(execute=True):
        result = intake.process_inbox(limit=4)

    assert result["events"] == 9
    assert SyncRecord.objects.count() == 3
    assert not InboundEvent.objects.filter(status="received").exists()
    assert InboundEvent.objects.filter(record__isnull=True).count() == 0
    # every record is due for a worker and a wake-up was sent
    assert SyncRecord.objects.filter(status="pending", stage="fetch").count() == 3
    assert django_rq.get_queue("default").count == 1


def test_retention_archives_old_terminal_records_and_drops_old_rows(connections, alice):
    from apps.sync import retention
    from apps.sync.models import Attempt, AuditEntry, SyncRecordArchive, SyncRun

    old = timezone.now() - timedelta(days=200)
    records = due_records(connections, 4, status="succeeded")
    held = due_records(connections, 1, source="salesforce", status="held")[0]
    audited = records[3]
    AuditEntry.objects.create(actor=alice, record=audited, action="comment", reason="keep me")
    for r in [*records, held]:
        Attempt.objects.create(record=r, stage="validate", system="netsuite", method="PUT", url="/x", outcome="ok")
    SyncRecord.objects.update(updated_at=old)
    Attempt.objects.update(started_at=old)
    SyncRun.objects.create(kind="drain:default", status="completed")
    SyncRun.objects.update(created_at=old)

    out = retention.purge()

    assert out["archived"] == 3  # the held one and the audited one stay hot
    assert set(SyncRecord.objects.values_list("id", flat=True)) == {held.pk, audited.pk}
    assert set(SyncRecordArchive.objects.values_list("id", flat=True)) == {r.pk for r in records[:3]}
    assert SyncRecordArchive.objects.get(pk=records[0].pk).data["stage"] == "validate"
    assert Attempt.objects.filter(record=held).count() == 1  # a held record keeps its history
    assert not SyncRun.objects.exists()


def test_a_full_inbox_batch_wakes_a_second_inbox_job(connections, django_capture_on_commit_callbacks):
    from apps.connectors.callbacks import EventSpec

    specs = [EventSpec(event_id=str(i), event_type="deal.propertyChange:dealstage", body={},
                       workflow="quote_to_project", source_key=f"deal:{i}", payload={"deal_id": str(i)})
             for i in range(10)]
    intake.store_events(connections["hubspot"], specs, {}, 202)
    with django_capture_on_commit_callbacks(execute=True):
        intake.process_inbox(limit=4)
    assert django_rq.get_queue("high").count == 1  # one extra inbox job, not one per batch
    assert SyncRecord.objects.count() == 10
