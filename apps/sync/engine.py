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
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.connectors.base import DownstreamError
from apps.connectors.registry import client_class
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


class Recorder:
    """Writes an Attempt before each call and completes it after (so a call cut short is still on record)."""

    def __init__(self, record: SyncRecord, stage: str, run: SyncRun | None):
        self.record, self.stage, self.run = record, stage, run

    def start(self, *, system, method, url, summary):
        return Attempt.objects.create(record=self.record, run=self.run, stage=self.stage, system=system,
                                      method=method, url=url[:500], request_summary=summary[:2000])

    def finish(self, handle, *, status, excerpt, duration_ms, outcome):
        Attempt.objects.filter(pk=handle.pk).update(response_status=status, response_excerpt=excerpt[:2000],
                                                    duration_ms=duration_ms, outcome=outcome)


class StageContext:
    def __init__(self, record: SyncRecord, stage: str, batch: Batch):
        self.record = record
        self.stage = stage
        self.batch = batch
        self.source = record.source_connection
        self.payload = dict(record.current_payload)
        self.context = dict(record.context)
        self.original = None
        self.apply_fns = []
        self.recorder = Recorder(record, stage, batch.run)

    def client_for(self, connection: Connection):
        return client_class(connection.kind)(connection, self.recorder)

    def client_for_role(self, role: str):
        return self.client_for(self.batch.connection_for_role(role))

    def reference(self, cls):
        return self.batch.reference(cls)

    def on_commit(self, fn) -> None:
        """Run fn in the transaction that commits this stage (canonical writes go with the stage change)."""
        self.apply_fns.append(fn)

    def set_original(self, payload: dict) -> None:
        self.original = dict(payload)


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


def _commit(record: SyncRecord, token: uuid.UUID, fields: dict, apply_fns=()) -> None:
    now = timezone.now()
    with transaction.atomic():
        for fn in apply_fns:
            fn()
        n = SyncRecord.objects.filter(pk=record.pk, lease_token=token).update(updated_at=now, **fields)
        if n == 0:
            raise LeaseLost(record.pk)


CLEAR_REASON = {"reason_code": "", "message": "", "fault_fields": [], "failed_system": "", "system_message": "",
                "error_signature": ""}


def _hold_fields(wf, problems: list[Problem], ctx: StageContext) -> dict:
    from .desk import error_signature

    first = problems[0]
    fields = sorted({f for p in problems for f in p.fields})
    message = " ".join(p.message for p in problems)
    stage = wf.stage(ctx.stage)
    return {
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


def _renew_lease(record: SyncRecord, token: uuid.UUID) -> None:
    """Extend our lease before working the record, if it is still ours.

    The lease was taken when the batch was claimed; a record waits its turn in the batch, and if its lease expired
    meanwhile another worker may have claimed it. Calling anyone for it then would run its stage twice at once
    (two Kantata searches that find nothing, then two workspaces): stop here instead."""
    n = SyncRecord.objects.filter(pk=record.pk, lease_token=token).update(
        lease_expires_at=timezone.now() + timedelta(seconds=settings.HANDOFF_LEASE_SECONDS))
    if n == 0:
        raise LeaseLost(record.pk)


def process_record(record: SyncRecord, token: uuid.UUID, batch: Batch) -> str:
    """Run the record's stages from where it stands. Returns succeeded / held / retrying / lost."""
    wf = get_workflow(record.workflow)
    stage_name = record.stage
    try:
        _renew_lease(record, token)
        while True:
            stage = wf.stage(stage_name)
            ctx = StageContext(record, stage_name, batch)
            paused = _paused_connection(record, stage, batch)
            if paused is not None:
                # a paused system makes its records wait, not fail: no attempt is spent
                _commit(record, token, {
                    "status": SyncRecord.Status.RETRYING, "lease_token": None, "lease_expires_at": None,
                    "next_attempt_at": timezone.now() + timedelta(seconds=PAUSE_RECHECK_SECONDS),
                    "reason_code": "connection_paused", "failed_system": paused.kind,
                    "message": f"Waiting: {paused.name} is paused"
                               f"{' (' + paused.paused_reason + ')' if paused.paused_reason else ''}.",
                    "context": ctx.context, "current_payload": ctx.payload})
                return "waiting"
            try:
                stage.run(ctx)
            except Hold as hold:
                _commit(record, token, _hold_fields(wf, hold.problems, ctx))
                _notify_source_of_hold(wf, ctx, hold.problems)
                return "held"
            except DownstreamError as exc:
                if exc.permanent:
                    reason = "downstream_auth" if exc.status in (401, 403) else "downstream_validation"
                    problem = Problem(reason, f"{exc.system or 'The system'} refused the request: {exc.message}",
                                      [], exc.system, exc.message)
                    _commit(record, token, _hold_fields(wf, [problem], ctx))
                    return "held"
                return _retry_or_hold(wf, record, token, ctx, stage, exc, batch)
            except (LeaseLost, KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # a bug: hold the record for an admin, keep the batch going
                log.exception("stage %s failed for record %s", stage_name, record.pk)
                problem = Problem("internal_error", f"Handoff failed at stage “{stage.label}”: {exc}", [],
                                  "handoff", traceback.format_exc()[-3000:])
                _commit(record, token, _hold_fields(wf, [problem], ctx))
                return "held"
            if stage.system_role:
                circuit.record_success(_stage_connection(record, stage, batch))
            nxt = wf.next_stage(stage_name)
            fields = {"stage": nxt or stage_name, "context": ctx.context, "current_payload": ctx.payload,
                      "attempts": 0, **summary_fields(record, ctx.payload, ctx.context),
                      "lease_expires_at": timezone.now() + timedelta(seconds=settings.HANDOFF_LEASE_SECONDS)}
            if ctx.original is not None:
                fields["original_payload"] = ctx.original
            if nxt is None:
                fields.update(status=SyncRecord.Status.SUCCEEDED, completed_at=timezone.now(), lease_token=None,
                              lease_expires_at=None, next_attempt_at=None, **CLEAR_REASON)
            _commit(record, token, fields, ctx.apply_fns)
            record.current_payload, record.context = ctx.payload, ctx.context
            if nxt is None:
                return "succeeded"
            stage_name = nxt
    except LeaseLost:
        log.warning("lease lost on record %s; another worker has it", record.pk)
        return "lost"


PAUSE_RECHECK_SECONDS = 30


def _stage_connection(record: SyncRecord, stage, batch: Batch) -> Connection | None:
    if not stage.system_role:
        return None
    if stage.system_role == "crm":
        return batch.source_connection(record.source_connection_id)
    try:
        return batch.connection_for_role(stage.system_role)
    except DownstreamError:
        return None


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


def _retry_or_hold(wf, record, token, ctx, stage, exc: DownstreamError, batch: Batch) -> str:
    attempts = record.attempts + 1
    try:
        conn = batch.connection_for_role(stage.system_role) if stage.system_role not in ("", "crm") \
            else record.source_connection
    except DownstreamError:
        conn = None
    if conn is not None:
        circuit.record_failure(conn, exc.message)
    max_attempts = conn.max_attempts if conn else 5
    if attempts >= max_attempts:
        # retries exhausted: a dead letter, for an integration admin to replay when the system is back
        problem = Problem("downstream_unavailable",
                          f"{exc.system or 'The system'} stayed unavailable after {attempts} attempts at stage "
                          f"“{stage.label}”: {exc.message}. Replay it when the system is back.", [], exc.system,
                          exc.message)
        fields = _hold_fields(wf, [problem], ctx)
        fields.update(attempts=attempts, status=SyncRecord.Status.DEAD, owner_team="integration_admin")
        _commit(record, token, fields)
        return "dead"
    delay = backoff_seconds(conn, attempts, exc.retry_after)
    _commit(record, token, {
        "status": SyncRecord.Status.RETRYING, "attempts": attempts, "lease_token": None, "lease_expires_at": None,
        "next_attempt_at": timezone.now() + timedelta(seconds=delay), "context": ctx.context,
        "current_payload": ctx.payload, "reason_code": "downstream_unavailable",
        "message": f"{exc.message}; retry {attempts} of {max_attempts - 1} in {delay:.0f} s",
        "failed_system": exc.system, "system_message": exc.message[:4000],
        **({"original_payload": ctx.original} if ctx.original is not None else {}),
    })
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
        token, records = claim(priorities=priorities, limit=batch_size)
        if not records:
            break
        counts["claimed"] += len(records)
        if len(records) == batch_size:
            wake(f"records:{queue_name}")  # more work is likely waiting: let another worker help
        for record in records:
            with log_context(correlation_id=str(record.correlation_id), record_id=record.pk,
                             connection=record.source_connection.slug):
                counts[process_record(record, token, batch)] += 1
        if time.monotonic() > deadline:
            wake(f"records:{queue_name}")
            break
    return counts
