"""RQ jobs: thin. The nightly run (config/cron.py) and a run queued by the "Run now" button. Each also shows on
the console's Runs page as a SyncRun of kind "reconciliation"."""

from __future__ import annotations

from collections import Counter

from apps.sync.jobs import run_logged

from . import services
from .models import ReconciliationRun


def _counts(run: ReconciliationRun) -> Counter:
    return Counter({"run": run.pk, "lines": run.lines, "over_tolerance": run.over_tolerance, "opened": run.opened,
                    "updated": run.updated, "resolved": run.resolved, run.status: 1})


def nightly() -> dict:
    """The last 12 complete months, every night."""
    return dict(run_logged("reconciliation", lambda _: _counts(
        services.run_now(trigger=ReconciliationRun.Trigger.NIGHTLY))))


def run_queued(run_id: int) -> dict:
    """A run somebody asked for (it was created as queued, with its range)."""
    run = ReconciliationRun.objects.filter(pk=run_id, status=ReconciliationRun.Status.QUEUED).first()
    if run is None:  # already run (a redelivered job) or marked failed meanwhile
        return {"skipped": run_id}
    return dict(run_logged("reconciliation", lambda _: _counts(services.execute(run))))
