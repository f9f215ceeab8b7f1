"""The RQ job of a bulk action: thin, like jobs.py. Its argument is the BulkAction's id only; the action, the
records and their versions at preview time are in the database."""

from __future__ import annotations

from .bulk_run import bulk_run
from .jobs import drop_dead_connections


def run_bulk(bulk_id: int) -> dict:
    """Carry out a confirmed bulk action (queued by bulk.bulk_confirm); progress is kept on the BulkAction."""
    drop_dead_connections()  # as jobs.run_logged: never start on a connection PostgreSQL has killed
    return bulk_run(bulk_id)
