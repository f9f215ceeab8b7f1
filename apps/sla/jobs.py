"""RQ jobs of the SLA app: thin wrappers the scheduler (config/cron.py) calls."""

from __future__ import annotations

from . import services


def evaluate_sla() -> dict:
    """Every minute: recompute SLA due times/states of open records and notify newly crossed thresholds."""
    return services.evaluate()
