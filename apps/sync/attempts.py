"""The call log of one record's run: every call a stage makes is kept in memory and written, in one INSERT, in the
transaction that commits the record's outcome.

Writing each attempt before and after its call would cost two statements per call, a third of a record's SQL.
The price: a call a killed worker was making is not in the log; the record is worked again once its lease
expires, and that run's calls are."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection as db
from django.utils import timezone

from .models import Attempt, SyncRecord, SyncRun


@dataclass(slots=True)
class PendingAttempt:
    """A call made for a record, kept until the record's outcome is committed (a model instance per call would
    cost more than its share of the INSERT)."""

    record_id: int
    run_id: int | None
    stage: str
    system: str
    method: str
    url: str
    request_summary: str
    started_at: object
    response_status: int | None = None
    response_excerpt: str = ""
    duration_ms: int | None = None
    outcome: str = Attempt.Outcome.STARTED


ATTEMPT_COLUMNS = [("record_id", "bigint"), ("run_id", "bigint"), ("stage", "text"), ("system", "text"),
                   ("method", "text"), ("url", "text"), ("request_summary", "text"), ("response_status", "integer"),
                   ("response_excerpt", "text"), ("duration_ms", "integer"), ("outcome", "text"),
                   ("started_at", "timestamptz")]
# one array per column (`unnest`): the statement's text and its 12 parameters are the same whatever the number of
# calls, so psycopg reuses its parsed form (a multi-row VALUES list of 7 calls has 84 parameters, over psycopg's
# cache limit of 50, and would be parsed again for every record; the ORM's bulk_create costs several times more)
ATTEMPT_INSERT = (f"INSERT INTO sync_attempt ({', '.join(n for n, _ in ATTEMPT_COLUMNS)}) "
                  f"SELECT * FROM unnest({', '.join(f'%s::{t}[]' for _, t in ATTEMPT_COLUMNS)})")


class Recorder:
    """Collects the attempts of one record's calls (the connectors' AttemptRecorder); `stage` is the stage the
    calls are made for."""

    def __init__(self, record: SyncRecord, run: SyncRun | None):
        self.record, self.run = record, run
        self.stage = ""
        self.pending: list[PendingAttempt] = []

    def start(self, *, system, method, url, summary):
        attempt = PendingAttempt(record_id=self.record.pk, run_id=self.run.pk if self.run else None,
                                 stage=self.stage, system=system, method=method, url=url[:500],
                                 request_summary=summary[:2000], started_at=timezone.now())
        self.pending.append(attempt)
        return attempt

    def finish(self, handle, *, status, excerpt, duration_ms, outcome):
        handle.response_status, handle.response_excerpt = status, excerpt[:2000]
        handle.duration_ms, handle.outcome = duration_ms, outcome

    def flush(self) -> None:
        """One INSERT of every pending attempt."""
        if not self.pending:
            return
        columns = [[] for _ in ATTEMPT_COLUMNS]
        for a in self.pending:
            for values, (name, _) in zip(columns, ATTEMPT_COLUMNS):
                values.append(getattr(a, name))
        with db.cursor() as cur:
            cur.execute(ATTEMPT_INSERT, columns)
        self.pending = []
