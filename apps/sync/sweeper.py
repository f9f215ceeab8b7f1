"""The sweeper: every few seconds, wake up whatever PostgreSQL says is still due.

This is what makes a lost enqueue, a Redis restart (even with its data wiped) or a killed worker cost time
and never a record: pending inbox events, records due for a (re)try and records whose lease expired are all
rows, and the sweeper sends wake-ups for them.
"""

from __future__ import annotations

from django.utils import timezone

from .engine import due_filter
from .models import InboundEvent, SyncRecord
from .wakeup import QUEUE_PRIORITIES, enqueue_now


def sweep() -> dict:
    from .circuit import probe_open_circuits

    now = timezone.now()
    woken = {}
    probed = probe_open_circuits(now)
    if probed:
        woken["circuits"] = probed
    if InboundEvent.objects.filter(status=InboundEvent.Status.RECEIVED).exists():
        woken["inbox"] = enqueue_now("inbox")
    for queue, priorities in QUEUE_PRIORITIES.items():
        if SyncRecord.objects.filter(due_filter(now), priority__in=priorities).exists():
            woken[f"records:{queue}"] = enqueue_now(f"records:{queue}")
    return woken
