"""Retention: keep the hot tables the size of recent work.

- Terminal records (succeeded / ignored) older than HANDOFF_RETAIN_RECORDS_DAYS move to SyncRecordArchive
  (one INSERT … SELECT and one DELETE per batch). Records with human actions stay hot: the audit trail is
  append-only and points at them.
- Attempts of terminal records older than HANDOFF_RETAIN_ATTEMPTS_DAYS, inbound events older than
  HANDOFF_RETAIN_EVENTS_DAYS (once processed, ignored or rejected) and runs older than HANDOFF_RETAIN_RUNS_DAYS
  are deleted.
Every step works in batches, so it never holds long locks; it runs hourly from the scheduler.
"""

from __future__ import annotations

import time
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from .models import Attempt, InboundEvent, SyncRecord, SyncRun

BATCH = 5000


def _days(name: str, default: int) -> timedelta:
    return timedelta(days=getattr(settings, name, default))


ARCHIVE_SQL = """
WITH moved AS (
    DELETE FROM sync_syncrecord r
    WHERE r.id IN (
        SELECT id FROM sync_syncrecord
        WHERE status IN ('succeeded', 'ignored') AND updated_at < %(cutoff)s
          AND NOT EXISTS (SELECT 1 FROM sync_auditentry a WHERE a.record_id = sync_syncrecord.id)
        ORDER BY id LIMIT %(batch)s
        FOR UPDATE SKIP LOCKED)
    RETURNING r.*
)
INSERT INTO sync_syncrecordarchive (id, workflow, status, source_connection_id, source_key, correlation_id, title,
                                    amount, currency, created_at, completed_at, search_keys, data, archived_at)
SELECT id, workflow, status, source_connection_id, source_key, correlation_id, title, amount, currency,
       created_at, completed_at, search_keys,
       jsonb_build_object('original_payload', original_payload, 'current_payload', current_payload,
                          'context', context, 'stage', stage, 'priority', priority),
       now()
FROM moved
ON CONFLICT (id) DO NOTHING
"""


def purge(now=None, *, max_seconds: float = 300.0) -> dict:
    now = now or timezone.now()
    deadline = time.monotonic() + max_seconds
    out = {"attempts": 0, "events": 0, "runs": 0, "archived": 0}

    def batches(fn, key):
        while time.monotonic() < deadline:
            n = fn()
            out[key] += n
            if n < BATCH:
                break

    def attempts():
        ids = list(Attempt.objects.filter(started_at__lt=now - _days("HANDOFF_RETAIN_ATTEMPTS_DAYS", 30),
                                          record__status__in=SyncRecord.TERMINAL)
                   .values_list("id", flat=True)[:BATCH])
        return Attempt.objects.filter(id__in=ids).delete()[0] if ids else 0

    def events():
        ids = list(InboundEvent.objects.filter(received_at__lt=now - _days("HANDOFF_RETAIN_EVENTS_DAYS", 30))
                   .exclude(status=InboundEvent.Status.RECEIVED).values_list("id", flat=True)[:BATCH])
        return InboundEvent.objects.filter(id__in=ids).delete()[0] if ids else 0

    def runs():
        ids = list(SyncRun.objects.filter(created_at__lt=now - _days("HANDOFF_RETAIN_RUNS_DAYS", 14))
                   .values_list("id", flat=True)[:BATCH])
        return SyncRun.objects.filter(id__in=ids).delete()[0] if ids else 0

    def records():
        # attempts and events of an archived record go with it (events keep pointing at nothing: SET NULL)
        with transaction.atomic(), connection.cursor() as cur:
            cutoff = now - _days("HANDOFF_RETAIN_RECORDS_DAYS", 90)
            cur.execute("DELETE FROM sync_attempt WHERE record_id IN (SELECT id FROM sync_syncrecord WHERE "
                        "status IN ('succeeded','ignored') AND updated_at < %s AND NOT EXISTS (SELECT 1 FROM "
                        "sync_auditentry a WHERE a.record_id = sync_syncrecord.id) ORDER BY id LIMIT %s)",
                        [cutoff, BATCH])
            cur.execute("UPDATE sync_inboundevent SET record_id = NULL WHERE record_id IN (SELECT id FROM "
                        "sync_syncrecord WHERE status IN ('succeeded','ignored') AND updated_at < %s AND NOT "
                        "EXISTS (SELECT 1 FROM sync_auditentry a WHERE a.record_id = sync_syncrecord.id) "
                        "ORDER BY id LIMIT %s)", [cutoff, BATCH])
            cur.execute(ARCHIVE_SQL, {"cutoff": cutoff, "batch": BATCH})
            return cur.rowcount

    batches(attempts, "attempts")
    batches(events, "events")
    batches(runs, "runs")
    batches(records, "archived")
    return out
