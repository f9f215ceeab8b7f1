"""The real worker and the sandboxes, as the end-to-end tests drive them: run RQ until no work is due, count what
a sandbox holds, switch a sandbox's faults on."""

from __future__ import annotations

import time

import django_rq
from rq import SimpleWorker

from apps.sandbox.models import SandboxObject, SandboxSystem
from apps.sync import sweeper
from apps.sync.models import InboundEvent, SyncRecord


def run_worker(timeout: float = 60.0) -> None:
    """Run a real RQ worker (non-forking SimpleWorker, so it shares the test's database) until no work is due.
    The sweeper is what wakes up retries whose backoff has passed, as in production."""
    queues = [django_rq.get_queue(n) for n in ("high", "default", "low")]
    worker = SimpleWorker(queues, connection=queues[0].connection)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker.work(burst=True)
        busy = SyncRecord.objects.filter(status__in=["pending", "retrying", "in_progress"]).exists()
        busy = busy or InboundEvent.objects.filter(status="received").exists()
        if not busy:
            return
        time.sleep(0.05)
        sweeper.sweep()
    raise AssertionError("work still pending after %.0f s" % timeout)


def sandbox_count(system: str, object_type: str) -> int:
    return SandboxObject.objects.filter(system=system, object_type=object_type).count()


def inject(*systems: str, **faults) -> None:
    """Set fault fields (error_rate, fail_next_count, latency_ms …) on the named sandboxes."""
    SandboxSystem.objects.filter(system__in=systems).update(**faults)
