"""Scheduled jobs, run by `manage.py rqcron config.cron` (the Procfile's scheduler)."""

from rq import cron

from apps.sync.jobs import sweep

# wake up anything PostgreSQL says is due but no job is working on (lost enqueue, Redis restart, dead worker)
cron.register(sweep, queue_name="high", interval=10, name="sweeper")
