"""Scheduled jobs, run by `manage.py rqcron config.cron` (the Procfile's scheduler)."""

from rq import cron

from apps.sla.jobs import evaluate_sla
from apps.sync.jobs import sweep

# wake up anything PostgreSQL says is due but no job is working on (lost enqueue, Redis restart, dead worker)
cron.register(sweep, queue_name="high", interval=10, name="sweeper")

# SLA clocks: due times / states of open records, and one notification per threshold crossed
cron.register(evaluate_sla, queue_name="default", interval=60, name="sla")

from apps.sync.jobs import purge_old  # noqa: E402

# keep the hot tables small: archive old terminal records, drop old attempts / events / runs
cron.register(purge_old, queue_name="low", interval=3600, name="retention")
from apps.reconcile.jobs import nightly as reconcile_nightly  # noqa: E402
cron.register(reconcile_nightly, queue_name="low", cron="0 2 * * *", name="reconciliation", job_timeout=3600)

from apps.forecast.jobs import scheduled_refresh  # noqa: E402

# actuals to forecast: an hourly full export to the forecasting tool. rqcron runs an interval job as soon as the
# scheduler starts, too: this first run (like any) is skipped while a full refresh is open or one succeeded in the
# last 30 minutes (demo_setup queues one just before), and without a forecasting connection it records a skipped
# refresh instead of failing (apps/forecast/services.schedule)
cron.register(scheduled_refresh, queue_name="low", interval=3600, name="forecast")
