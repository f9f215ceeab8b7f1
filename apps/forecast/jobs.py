"""RQ jobs of the forecast app (thin: a SyncRun around a service call)."""

from __future__ import annotations

from apps.sync.jobs import run_logged

from . import services


SKIPPED = {"open": "skipped_open_refresh", "fresh": "skipped_fresh_refresh", "not_configured": "skipped_not_configured"}


def scheduled_refresh() -> dict:
    """Hourly (config/cron.py): queue a full refresh unless one is still open or has just succeeded. Without a
    forecasting connection the run completes as skipped (and the board says why): it does not fail the job."""

    def run(_run):
        refresh, outcome = services.schedule()
        return {"queued": 1, "refresh_id": refresh.pk} if refresh else {SKIPPED[outcome]: 1}

    return dict(run_logged("forecast:schedule", run))
