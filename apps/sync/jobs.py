"""RQ jobs: thin. Each records a SyncRun, calls a service, and finishes the run (NetBox JobRunner-style)."""

from __future__ import annotations

import logging
import traceback
from collections import Counter

from django.db import connections
from django.utils import timezone

from . import engine, intake, sweeper, wakeup
from .models import SyncRun

log = logging.getLogger("handoff.jobs")


def _current_job_id() -> str:
    try:
        from rq import get_current_job

        job = get_current_job()
        return job.id if job else ""
    except Exception:
        return ""


def drop_dead_connections() -> None:
    """A worker process lives across jobs: drop a database connection PostgreSQL killed (restart, failover) or that
    is too old, as Django does around each request — else every later job of this worker fails on the dead
    connection ("the connection is closed") until the process is restarted. Never inside a transaction."""
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close_if_unusable_or_obsolete()


def run_logged(kind: str, fn) -> Counter:
    drop_dead_connections()
    run = SyncRun.objects.create(kind=kind, status=SyncRun.Status.RUNNING, started_at=timezone.now(),
                                 rq_job_id=_current_job_id())
    try:
        counts = fn(run)
    except Exception:
        run.status = SyncRun.Status.ERRORED
        run.error = traceback.format_exc()[-8000:]
        run.completed_at = timezone.now()
        run.save(update_fields=["status", "error", "completed_at"])
        log.exception("%s run %s errored", kind, run.pk)
        raise
    run.status = SyncRun.Status.COMPLETED
    run.counts = dict(counts)
    run.completed_at = timezone.now()
    run.log = [f"{k}: {v}" for k, v in sorted(counts.items())]
    run.save(update_fields=["status", "counts", "completed_at", "log"])
    return counts


def process_inbox() -> dict:
    wakeup.clear("inbox")
    return dict(run_logged("inbox", lambda run: intake.process_inbox()))


def drain_records(queue_name: str = "default") -> dict:
    wakeup.clear(f"records:{queue_name}")
    return dict(run_logged(f"drain:{queue_name}", lambda run: engine.drain(queue_name, run=run)))


def sweep() -> dict:
    drop_dead_connections()
    return sweeper.sweep()


def purge_old() -> dict:
    from . import retention

    return dict(run_logged("retention", lambda run: retention.purge()))
