"""Reads about the work itself (PostgreSQL is the truth): backlog per queue, inbox, drain rate, paused systems."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count, Min
from django.utils import timezone

from .engine import due_filter
from .models import Connection, InboundEvent, SyncRecord, SyncRun
from .wakeup import PRIORITY_QUEUE

RATE_WINDOW = timedelta(minutes=5)


def backlog(now=None) -> dict:
    """Due records per queue with the age of the oldest, the inbox, the recent drain rate and its ETA."""
    now = now or timezone.now()
    queues = {q: {"due": 0, "oldest_seconds": 0} for q in ("high", "default", "low")}
    for row in (SyncRecord.objects.filter(due_filter(now)).values("priority")
                .annotate(n=Count("id"), oldest=Min("next_attempt_at"))):
        q = queues[PRIORITY_QUEUE.get(row["priority"], "default")]
        q["due"] += row["n"]
        if row["oldest"]:
            q["oldest_seconds"] = max(q["oldest_seconds"], int((now - row["oldest"]).total_seconds()))
    inbox = InboundEvent.objects.filter(status=InboundEvent.Status.RECEIVED).aggregate(
        n=Count("id"), oldest=Min("received_at"))
    done = 0
    for counts in SyncRun.objects.filter(kind__startswith="drain:", completed_at__gte=now - RATE_WINDOW) \
            .values_list("counts", flat=True):
        done += sum(v for k, v in (counts or {}).items() if k in ("succeeded", "held", "dead", "retrying"))
    rate = done / RATE_WINDOW.total_seconds()
    due = sum(q["due"] for q in queues.values()) + (inbox["n"] or 0)
    return {
        "queues": queues, "due": due,
        "inbox": inbox["n"] or 0,
        "inbox_oldest_seconds": int((now - inbox["oldest"]).total_seconds()) if inbox["oldest"] else 0,
        "rate_per_second": round(rate, 1),
        "drain_eta_seconds": int(due / rate) if rate > 0 and due else None,
        "paused": list(Connection.objects.filter(paused=True).values("name", "paused_by", "paused_reason",
                                                                      "paused_at")),
    }
