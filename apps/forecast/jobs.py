"""RQ jobs of the forecast app (thin: a SyncRun around a service call)."""

from __future__ import annotations

from apps.sync.jobs import run_logged

from . import services


def scheduled_refresh() -> dict:
    """Hourly (config/cron.py): queue a full refresh unless one is still open."""

    def run(_run):
        refresh = services.scheduled_refresh()
        return {"queued": 1, "refresh_id": refresh.pk} if refresh else {"skipped_open_refresh": 1}

    return dict(run_logged("forecast:schedule", run))
