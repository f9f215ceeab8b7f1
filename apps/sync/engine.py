"""The sync engine: claim due records, run their stages, record every attempt, hold or retry what fails.

Rules it keeps (docs/architecture.md):
- A record is claimed with `SELECT … FOR UPDATE SKIP LOCKED` and a lease token, so two workers never work the
  same record at once; a worker that dies leaves a lease that expires, and the record is claimed again.
- External calls happen outside any transaction. Each stage's result is committed in a new transaction, guarded
  by the lease token: if the lease was lost, nothing is written and the other worker carries on.
- Every downstream write is idempotent, so running a stage twice (after a crash or a lost response) is harmless.
"""

from __future__ import annotations

import logging
import random
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from apps.canonical.models import ExternalId
from apps.canonical.services import external_ids_link
from apps.connectors.base import DownstreamError
from apps.connectors.clients import CLIENTS
from apps.core.logging import log_context

from . import circuit
from .models import Attempt, Connection, SyncRecord, SyncRun
from .workflows.base import Hold, Problem, get_workflow

log = logging.getLogger("handoff.engine")

# RQ queue → record priorities it carries: P1 money postings are never stuck behind reference data
QUEUE_PRIORITIES = {"high": [1], "default": [2], "low": [3]}
PRIORITY_QUEUE = {p: q for q, ps in QUEUE_PRIORITIES.items() for p in ps}


class LeaseLost(Exception):
    """Another worker owns the record now (our lease expired); drop our result."""


class ConnectionPaused(Exception):
    """A stage asked for a client of a paused connection: the record waits for it (no call, no attempt spent)."""

    def __init__(self, connection: Connection):
        super().__init__(connection.slug)
        self.connection = connection


def due_filter(now) -> Q:
    return (Q(status__in=SyncRecord.CLAIMABLE, next_attempt_at__lte=now)
            | Q(status=SyncRecord.Status.IN_PROGRESS, lease_expires_at__lt=now))


def claim(*, priorities: list[int], limit: int) -> tuple[uuid.UUID, list[SyncRecord]]:
    """Atomically take up to `limit` due records for this worker."""
    now = timezone.now()
    token = uuid.uuid4()
    with transaction.atomic():
        ids = list(
            SyncRecord.objects.select_for_update(skip_locked=True)
            .filter(due_filter(now), priority__in=priorities)
            .order_by("priority", "next_attempt_at")
            .values_list("id", flat=True)[:limit]
        )
        if ids:
            SyncRecord.objects.filter(id__in=ids).update(
                status=SyncRecord.Status.IN_PROGRESS, lease_token=token,
                lease_expires_at=now + timedelta(seconds=settings.HANDOFF_LEASE_SECONDS))
    records = list(SyncRecord.objects.filter(id__in=ids).select_related("source_connection").order_by(
        "priority", "next_attempt_at")) if ids else []
    return token, records


class Batch:
    """What one drain shares across its records: connections, clients' sessions, reference data."""

    def __init__(self, run: SyncRun | None = None):
        self.run = run
        self._by_role: dict[str, Connection | None] = {}
        self._refs: dict[type, object] = {}

    def connection_for_role(self, role: str) -> Connection:
        if role not in self._by_role:
            self._by_role[role] = Connection.objects.filter(role=role, enabled=True).order_by("id").first()
        conn = self._by_role[role]
        if conn is None:
            raise DownstreamError(f"No enabled {role.upper()} connection is configured", permanent=True,
                                  system=role)
        return conn

    def connection_for_kind(self, kind: str) -> Connection | None:
        key = f"kind:{kind}"
        if key not in self._by_role:
            self._by_role[key] = Connection.objects.filter(kind=kind, enabled=True).order_by("id").first()
        return self._by_role[key]

    def source_connection(self, pk: int) -> Connection:
        """Fresh once per batch, so a pause takes effect within one drain."""
        key = f"source:{pk}"
        if key not in self._by_role:
            self._by_role[key] = Connection.objects.get(pk=pk)
        return self._by_role[key]

    def reference(self, cls):
        if cls not in self._refs:
            self._refs[cls] = cls.load()
        return self._refs[cls]


@dataclass(slots=True)
class PendingAttempt:
    """A call made for a record, kept until the record's outcome is committed (an Attempt row then; a model
    instance per call cost more than its share of the INSERT)."""

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


class Recorder:
    """Collects the attempts of one record's calls; the engine writes them in one INSERT, in the transaction that
    commits the record's outcome. (Writing each attempt before and after its call cost two statements per call, a
    third of a record's SQL. A call a killed worker was making is therefore not in the log; the record is worked
    again after its lease expires, and that run's calls are.)"""

    def __init__(self, record: SyncRecord, run: SyncRun | None):
        self.record, self.run = record, run
        self.stage = ""
        self.pending: list[Attempt] = []

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
        """One INSERT of every pending attempt, from one array per column (`unnest`): the statement's text and its
        12 parameters are the same whatever the number of calls, so psycopg reuses its parsed form (a multi-row
        VALUES list of 7 calls has 84 parameters, over psycopg's cache limit of 50, and was re-parsed for every
        record; the ORM's bulk_create compiles the same statement at several times the cost)."""
        if not self.pending:
            return
        from django.db import connection as db

        columns = [[] for _ in ATTEMPT_COLUMNS]
        for a in self.pending:
            for values, (name, _) in zip(columns, ATTEMPT_COLUMNS):
                values.append(getattr(a, name))
        with db.cursor() as cur:
            cur.execute(ATTEMPT_INSERT, columns)
        self.pending = []


ATTEMPT_COLUMNS = [("record_id", "bigint"), ("run_id", "bigint"), ("stage", "text"), ("system", "text"),
                   ("method", "text"), ("url", "text"), ("request_summary", "text"), ("response_status", "integer"),
                   ("response_excerpt", "text"), ("duration_ms", "integer"), ("outcome", "text"),
                   ("started_at", "timestamptz")]
ATTEMPT_INSERT = (f"INSERT INTO sync_attempt ({', '.join(n for n, _ in ATTEMPT_COLUMNS)}) "
                  f"SELECT * FROM unnest({', '.join(f'%s::{t}[]' for _, t in ATTEMPT_COLUMNS)})")


class Work:
    """What one run of a record carries from stage to stage until it is committed: the attempts made, the links
    to external ids found, objects already loaded, and the original payload if a stage replaced it."""

    def __init__(self, record: SyncRecord, run: SyncRun | None):
        self.recorder = Recorder(record, run)
        self.links: list[ExternalId] = []
        self.cache: dict = {}
        self.original: dict | None = None

    def flush_links(self) -> None:
        if self.links:
            external_ids_link(self.links)
            self.links = []


class StageContext:
    def __init__(self, record: SyncRecord, stage: str, batch: Batch, work: Work | None = None):
        self.record = record
        self.stage = stage
        self.batch = batch
        self.source = record.source_connection
        self.payload = dict(record.current_payload)
        self.context = dict(record.context)
        self.work = work or Work(record, batch.run)
        self.original = self.work.original
        self.apply_fns = []
        self.recorder = self.work.recorder
        self.recorder.stage = stage
        self.cache = self.work.cache

    def client_for(self, connection: Connection):
        if connection.paused:  # e.g. the CRM an invoice's status goes to, known only once the stage runs
            raise ConnectionPaused(connection)
        return CLIENTS[connection.kind](connection, self.recorder)

    def client_for_role(self, role: str):
        return self.client_for(self.batch.connection_for_role(role))

    def reference(self, cls):
        return self.batch.reference(cls)

    def on_commit(self, fn) -> None:
        """Run fn in the transaction that commits this stage (canonical writes go with the stage change)."""
        self.apply_fns.append(fn)

    def link(self, obj, *, system: str, object_type: str, external_id) -> None:
        """Link obj to its id in an external system when the record's progress is next committed (idempotent)."""
        from django.contrib.contenttypes.models import ContentType

        self.work.links.append(ExternalId(content_type=ContentType.objects.get_for_model(obj), object_id=obj.pk,
                                          system=system, object_type=object_type, external_id=str(external_id)))

    def set_original(self, payload: dict) -> None:
        self.original = dict(payload)
        self.work.original = self.original


def summary_fields(record: SyncRecord, payload: dict, context: dict) -> dict:
    """Columns derived from the payload: what the queue shows, sorts, groups and searches by."""
    from decimal import Decimal, InvalidOperation

    from .desk import business_priority, search_keys

    out = {}
    wf = get_workflow(record.workflow)
    if wf.summary is not None:
        s = wf.summary(payload)
        title, amount, currency = s.get("title"), s.get("amount"), s.get("currency")
    else:
        title, amount, currency = payload.get("opportunity_name"), payload.get("amount"), payload.get("currency")
    if title:
        out["title"] = str(title)[:300]
    try:
        out["amount"] = Decimal(str(amount)) if amount not in (None, "") else None
    except (InvalidOperation, ValueError):
        out["amount"] = None
    if out.get("amount") is not None and (not out["amount"].is_finite() or abs(out["amount"]) >= Decimal("1e16")):
        out["amount"] = None
    out["currency"] = str(currency or "")[:3]
    if not record.priority_overridden:
        out["priority"], out["priority_reason"] = business_priority(
            workflow=record.workflow, amount=out["amount"], currency=out["currency"],
            title=out.get("title", record.title))
    out["search_keys"] = search_keys({"source_key": record.source_key, "correlation_id": record.correlation_id,
                                      "current_payload": payload, "context": context})
    return out


def update_leased(pk: int, token: uuid.UUID, fields: dict) -> int:
    """UPDATE the record's `fields` if our lease token still holds; returns the rows changed (0: lease lost).

    The statement is built from the model's field definitions, as the ORM's update() builds it (each value
    prepared by its field), without the query compiler that cost more than the statement itself."""
    from django.db import connection as db

    opts = SyncRecord._meta
    sets, params = [], []
    for name, value in fields.items():
        field = opts.get_field(name)
        if field.is_relation and isinstance(value, models.Model):
            value = value.pk
        sets.append(f'"{field.column}" = %s')
        params.append(field.get_db_prep_save(value, db))
    with db.cursor() as cur:
        cur.execute(f'UPDATE {opts.db_table} SET {", ".join(sets)} WHERE id = %s AND lease_token = %s',
                    [*params, pk, token])
        return cur.rowcount


def _commit(record: SyncRecord, token: uuid.UUID, fields: dict, apply_fns=(), work: Work | None = None) -> None:
    """Write the record's progress, guarded by the lease, with what the stages collected (one transaction)."""
    now = timezone.now()
    with transaction.atomic():
        for fn in apply_fns:
            fn()
        n = update_leased(record.pk, token, {"updated_at": now, **fields})
        if n == 0:
            raise LeaseLost(record.pk)
        if work is not None:
            work.recorder.flush()
            work.flush_links()
            work.original = None


CLEAR_REASON = {"reason_code": "", "message": "", "fault_fields": [], "failed_system": "", "system_message": "",
                "error_signature": ""}


def _hold_fields(wf, problems: list[Problem], ctx: StageContext) -> dict:
    from .desk import error_signature

    first = problems[0]
    fields = sorted({f for p in problems for f in p.fields})
    message = " ".join(p.message for p in problems)
    stage = wf.stage(ctx.stage)
    return {
        "stage": ctx.stage,
        "error_signature": error_signature(first.reason, first.system, first.message),
        "target_system": first.system if first.system not in ("", "handoff") else stage.system_role,
        "status": SyncRecord.Status.HELD, "reason_code": first.reason, "message": message[:4000],
        "fault_fields": fields, "failed_system": first.system, "system_message": first.system_message[:4000],
        "owner_team": wf.owner_team(first.reason), "held_at": timezone.now(), "lease_token": None,
        "lease_expires_at": None, "attempts": 0, "context": ctx.context, "current_payload": ctx.payload,
        **({"original_payload": ctx.original} if ctx.original is not None else {}),
        **summary_fields(ctx.record, ctx.payload, ctx.context),
    }


def backoff_seconds(connection: Connection | None, attempt: int, retry_after: float | None) -> float:
    base = connection.backoff_base_seconds if connection else 2.0
    cap = connection.backoff_cap_seconds if connection else 300.0
    delay = min(cap, base * (2 ** max(0, attempt - 1)))
    delay = delay / 2 + random.uniform(0, delay / 2)  # "equal jitter": never zero, never in lock-step
    return max(delay, retry_after or 0.0)


def _renew_lease(record: SyncRecord, token: uuid.UUID) -> float:
    """Extend our lease before working the record, if it is still ours; returns when to renew it next.

    The lease was taken when the batch was claimed; a record waits its turn in the batch, and if its lease expired
    meanwhile another worker may have claimed it. Calling anyone for it then would run its stage twice at once
    (two Kantata searches that find nothing, then two workspaces): stop here instead."""
    n = SyncRecord.objects.filter(pk=record.pk, lease_token=token).update(
        lease_expires_at=timezone.now() + timedelta(seconds=settings.HANDOFF_LEASE_SECONDS))
    if n == 0:
        raise LeaseLost(record.pk)
    return _renew_due()


def _renew_due() -> float:
    # renewed once half the lease has passed: until then nobody else can have claimed the record (a claim needs
    # an expired lease), whatever the clock skew between workers, so the UPDATE is only paid by slow records
    return time.monotonic() + settings.HANDOFF_LEASE_SECONDS / 2


def process_record(record: SyncRecord, token: uuid.UUID, batch: Batch, *, renew_at: float = 0.0) -> str:
    """Run the record's stages from where it stands. Returns succeeded / held / retrying / lost.

    A stage's result is committed with the stage change when the stage has canonical writes to make (its
    on_commit functions) and at the end; stages in between only call idempotent downstream APIs, so if the worker
    dies before the next commit the record is worked again from its last committed stage and nothing is
    duplicated. That keeps a record to a few statements: its attempts and external-id links are written in one
    INSERT each, with the outcome."""
    wf = get_workflow(record.workflow)
    stage_name = record.stage
    work = Work(record, batch.run)
    progressed = False  # a stage succeeded in this run: a later failure starts the attempt count afresh
    try:
        while True:
            if time.monotonic() >= renew_at:
                renew_at = _renew_lease(record, token)
            stage = wf.stage(stage_name)
            ctx = StageContext(record, stage_name, batch, work)
            paused = _paused_connection(record, stage, batch)
            if paused is not None:
                _wait_for(paused, record, token, ctx, progressed)
                return "waiting"
            try:
                stage.run(ctx)
            except ConnectionPaused as exc:
                _wait_for(exc.connection, record, token, ctx, progressed)
                return "waiting"
            except Hold as hold:
                _commit(record, token, _hold_fields(wf, hold.problems, ctx), work=work)
                _notify_source_of_hold(wf, ctx, hold.problems)
                work.recorder.flush()  # the notice's call
                return "held"
            except DownstreamError as exc:
                if exc.permanent:
                    reason = "downstream_auth" if exc.status in (401, 403) else "downstream_validation"
                    problem = Problem(reason, f"{exc.system or 'The system'} refused the request: {exc.message}",
                                      [], exc.system, exc.message)
                    _commit(record, token, _hold_fields(wf, [problem], ctx), work=work)
                    return "held"
                return _retry_or_hold(wf, record, token, ctx, stage, exc, batch, progressed)
            except (LeaseLost, KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # a bug: hold the record for an admin, keep the batch going
                log.exception("stage %s failed for record %s", stage_name, record.pk)
                problem = Problem("internal_error", f"Handoff failed at stage “{stage.label}”: {exc}", [],
                                  "handoff", traceback.format_exc()[-3000:])
                _commit(record, token, _hold_fields(wf, [problem], ctx), work=work)
                return "held"
            if stage.system_role:
                for conn in _called_connections(record, stage, batch, work):
                    circuit.record_success(conn)
            progressed = True
            nxt = wf.next_stage(stage_name)
            record.current_payload, record.context = ctx.payload, ctx.context
            if nxt is not None and (not ctx.apply_fns or stage.idempotent_writes):
                if ctx.apply_fns:  # written now (a later stage reads them); written again harmlessly if re-run
                    with transaction.atomic():
                        for fn in ctx.apply_fns:
                            fn()
                stage_name = nxt  # the record's progress is committed with a later stage
                continue
            fields = {"stage": nxt or stage_name, "context": ctx.context, "current_payload": ctx.payload,
                      "attempts": 0, **summary_fields(record, ctx.payload, ctx.context),
                      "lease_expires_at": timezone.now() + timedelta(seconds=settings.HANDOFF_LEASE_SECONDS)}
            if ctx.original is not None:
                fields["original_payload"] = ctx.original
            if nxt is None:
                fields.update(status=SyncRecord.Status.SUCCEEDED, completed_at=timezone.now(), lease_token=None,
                              lease_expires_at=None, next_attempt_at=None, **CLEAR_REASON)
            _commit(record, token, fields, ctx.apply_fns, work=work)
            renew_at = _renew_due()
            if nxt is None:
                return "succeeded"
            stage_name = nxt
    except LeaseLost:
        log.warning("lease lost on record %s; another worker has it", record.pk)
        return "lost"


PAUSE_RECHECK_SECONDS = 30


def _wait_for(paused: Connection, record: SyncRecord, token: uuid.UUID, ctx: StageContext, progressed: bool) -> None:
    """A paused system makes its records wait, not fail: no attempt is spent."""
    _commit(record, token, {
        "stage": ctx.stage, "status": SyncRecord.Status.RETRYING, "lease_token": None, "lease_expires_at": None,
        "next_attempt_at": timezone.now() + timedelta(seconds=PAUSE_RECHECK_SECONDS),
        "reason_code": "connection_paused", "failed_system": paused.kind,
        "message": f"Waiting: {paused.name} is paused"
                   f"{' (' + paused.paused_reason + ')' if paused.paused_reason else ''}.",
        "context": ctx.context, "current_payload": ctx.payload,
        **({"original_payload": ctx.original} if ctx.original is not None else {}),
        **({"attempts": 0} if progressed else {})}, work=ctx.work)


def _stage_connection(record: SyncRecord, stage, batch: Batch) -> Connection | None:
    """The connection a stage calls, for pause and circuit accounting. A "crm" stage of a record that came from
    the CRM calls that CRM; one of a record from elsewhere (a Stripe invoice event writing its status to HubSpot
    and Salesforce) calls whichever CRM the linked objects live in, so it is known only from its calls."""
    if not stage.system_role:
        return None
    if stage.system_role == "crm":
        source = batch.source_connection(record.source_connection_id)
        return source if source.role == "crm" else None
    try:
        return batch.connection_for_role(stage.system_role)
    except DownstreamError:
        return None


def _called_connections(record: SyncRecord, stage, batch: Batch, work: Work) -> list[Connection]:
    conn = _stage_connection(record, stage, batch)
    if conn is not None:
        return [conn]
    kinds = {a.system for a in work.recorder.pending if a.stage == stage.name and a.outcome == "ok"}
    return [c for c in (batch.connection_for_kind(k) for k in sorted(kinds)) if c is not None]


def _paused_connection(record: SyncRecord, stage, batch: Batch) -> Connection | None:
    conn = _stage_connection(record, stage, batch)
    if conn is not None and not conn.paused and conn.consecutive_failures >= conn.circuit_threshold:
        conn.refresh_from_db(fields=["paused", "paused_reason", "paused_at", "paused_by", "consecutive_failures"])
    return conn if conn is not None and conn.paused else None


def _notify_source_of_hold(wf, ctx: StageContext, problems: list[Problem]) -> None:
    """Best effort: tell the source record it is held (e.g. the CRM opportunity shows "held: reason")."""
    hook = getattr(wf, "on_hold", None)
    if hook is None or ctx.source.paused:
        return
    try:
        hook(ctx, problems)
    except DownstreamError as exc:
        log.info("could not write the hold back to %s for record %s: %s", ctx.source.slug, ctx.record.pk, exc)
    except Exception:  # never let the notice break the worker
        log.exception("hold write-back failed for record %s", ctx.record.pk)


def _retry_or_hold(wf, record, token, ctx, stage, exc: DownstreamError, batch: Batch, progressed: bool = False) -> str:
    attempts = (0 if progressed else record.attempts) + 1
    # the failure counts against the system that failed (a stage may call several), else the stage's own
    conn = _stage_connection(record, stage, batch)
    if exc.system and (conn is None or conn.kind != exc.system):
        conn = batch.connection_for_kind(exc.system) or conn
    if conn is not None:
        circuit.record_failure(conn, exc.message)
    max_attempts = (conn or record.source_connection).max_attempts
    if attempts >= max_attempts:
        # retries exhausted: a dead letter, for an integration admin to replay when the system is back
        problem = Problem("downstream_unavailable",
                          f"{exc.system or 'The system'} stayed unavailable after {attempts} attempts at stage "
                          f"“{stage.label}”: {exc.message}. Replay it when the system is back.", [], exc.system,
                          exc.message)
        fields = _hold_fields(wf, [problem], ctx)
        fields.update(attempts=attempts, status=SyncRecord.Status.DEAD, owner_team="integration_admin")
        _commit(record, token, fields, work=ctx.work)
        return "dead"
    delay = backoff_seconds(conn or record.source_connection, attempts, exc.retry_after)
    _commit(record, token, {
        "stage": ctx.stage,
        "status": SyncRecord.Status.RETRYING, "attempts": attempts, "lease_token": None, "lease_expires_at": None,
        "next_attempt_at": timezone.now() + timedelta(seconds=delay), "context": ctx.context,
        "current_payload": ctx.payload, "reason_code": "downstream_unavailable",
        "message": f"{exc.message}; retry {attempts} of {max_attempts - 1} in {delay:.0f} s",
        "failed_system": exc.system, "system_message": exc.message[:4000],
        **({"original_payload": ctx.original} if ctx.original is not None else {}),
    }, work=ctx.work)
    return "retrying"


def drain(queue_name: str = "default", *, max_seconds: float = 30.0, run: SyncRun | None = None,
          batch_size: int | None = None) -> Counter:
    """Work due records of one queue's priorities in batches until none is due or time is up."""
    from .wakeup import wake

    batch_size = batch_size or settings.HANDOFF_CLAIM_BATCH
    priorities = QUEUE_PRIORITIES[queue_name]
    batch = Batch(run)
    counts: Counter = Counter()
    deadline = time.monotonic() + max_seconds
    while True:
        claimed_at = time.monotonic()
        token, records = claim(priorities=priorities, limit=batch_size)
        if not records:
            break
        counts["claimed"] += len(records)
        if len(records) == batch_size:
            wake(f"records:{queue_name}")  # more work is likely waiting: let another worker help
        for record in records:
            with log_context(correlation_id=str(record.correlation_id), record_id=record.pk,
                             connection=record.source_connection.slug):
                counts[process_record(record, token, batch,
                                      renew_at=claimed_at + settings.HANDOFF_LEASE_SECONDS / 2)] += 1
        if time.monotonic() > deadline:
            wake(f"records:{queue_name}")
            break
    return counts
