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
from django.db import connection as db, transaction
from django.db.models import Q
from django.utils import timezone

from apps.canonical.models import ExternalId
from apps.canonical.services import external_ids_link
from apps.connectors.base import DownstreamError
from apps.connectors.clients import CLIENTS
from apps.core.logging import log_context

from . import circuit
from .attempts import Recorder
from .errors import ConnectionPaused, LeaseLost
from .models import Connection, SyncRecord, SyncRun
from .queue_columns import summary_fields
from .record_states import held_fields, sql_assignments, succeeded_fields
from .wakeup import QUEUE_PRIORITIES, wake
from .workflows.base import Hold, Problem
from .workflows.catalog import get_workflow

log = logging.getLogger("handoff.engine")


def due_filter(now) -> Q:
    """Records a worker may claim: due for a (re)try, or left in progress by a worker whose lease expired."""
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


class StageContext:
    """One run of one record, from stage to stage until its outcome is committed: what a stage reads and writes
    (payload, context, clients, reference data, canonical writes for the commit) and what the run collects on the
    way (the calls made, links to external ids, objects already loaded, the original payload if a stage replaced
    it). The engine moves it to the next stage with begin()."""

    def __init__(self, record: SyncRecord, batch: Batch):
        self.record = record
        self.batch = batch
        self.source = record.source_connection
        self.recorder = Recorder(record, batch.run)
        self.links: list[ExternalId] = []
        self.cache: dict = {}
        self.original: dict | None = None
        self.stage = ""
        self.payload: dict = {}
        self.context: dict = {}
        self.apply_fns: list = []

    def begin(self, stage: str) -> None:
        """Start `stage` from the record's last good state: what a failed stage changed is not kept."""
        self.stage = self.recorder.stage = stage
        self.payload = dict(self.record.current_payload)
        self.context = dict(self.record.context)
        self.apply_fns = []

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

        self.links.append(ExternalId(content_type=ContentType.objects.get_for_model(obj), object_id=obj.pk,
                                     system=system, object_type=object_type, external_id=str(external_id)))

    def set_original(self, payload: dict) -> None:
        self.original = dict(payload)

    def flush(self) -> None:
        """Write what the run collected (in the transaction that commits the record's progress)."""
        self.recorder.flush()
        if self.links:
            external_ids_link(self.links)
            self.links = []
        self.original = None


def update_leased(pk: int, token: uuid.UUID, fields: dict) -> int:
    """UPDATE the record's `fields` if our lease token still holds; returns the rows changed (0: lease lost).

    Written without the ORM's query compiler, which cost more than the statement itself on this hot path."""
    sets, params = sql_assignments(fields)
    with db.cursor() as cur:
        cur.execute(f'UPDATE {SyncRecord._meta.db_table} SET {", ".join(sets)} WHERE id = %s AND lease_token = %s',
                    [*params, pk, token])
        return cur.rowcount


def _commit(record: SyncRecord, token: uuid.UUID, fields: dict, ctx: StageContext | None = None,
            apply_fns=()) -> None:
    """Write the record's progress, guarded by the lease, with what the run collected (one transaction)."""
    with transaction.atomic():
        for fn in apply_fns:
            fn()
        if update_leased(record.pk, token, {"updated_at": timezone.now(), **fields}) == 0:
            raise LeaseLost(record.pk)
        if ctx is not None:
            ctx.flush()


def _hold(wf, problems: list[Problem], ctx: StageContext) -> dict:
    return held_fields(wf, problems, record=ctx.record, stage=ctx.stage, payload=ctx.payload, context=ctx.context,
                       held_at=timezone.now(), original=ctx.original)


def _kept(ctx: StageContext) -> dict:
    """The run's payload and context, written with any outcome short of a hold."""
    return {"stage": ctx.stage, "context": ctx.context, "current_payload": ctx.payload,
            **({"original_payload": ctx.original} if ctx.original is not None else {})}


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
    """Run the record's stages from where it stands. Returns succeeded / held / dead / retrying / waiting / lost.

    A stage's result is committed with the stage change when the stage has canonical writes to make (its
    on_commit functions) and at the end; stages in between only call idempotent downstream APIs, so if the worker
    dies before the next commit the record is worked again from its last committed stage and nothing is
    duplicated. That keeps a record to a few statements: its attempts and external-id links are written in one
    INSERT each, with the outcome."""
    wf = get_workflow(record.workflow)
    stage_name = record.stage
    ctx = StageContext(record, batch)
    progressed = False  # a stage succeeded in this run: a later failure starts the attempt count afresh
    try:
        while True:
            if time.monotonic() >= renew_at:
                renew_at = _renew_lease(record, token)
            stage = wf.stage(stage_name)
            ctx.begin(stage_name)
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
                _commit(record, token, _hold(wf, hold.problems, ctx), ctx)
                _notify_source_of_hold(wf, ctx, hold.problems)
                ctx.recorder.flush()  # the notice's call
                return "held"
            except DownstreamError as exc:
                if exc.permanent:
                    reason = "downstream_auth" if exc.status in (401, 403) else "downstream_validation"
                    problem = Problem(reason, f"{exc.system or 'The system'} refused the request: {exc.message}",
                                      [], exc.system, exc.message)
                    _commit(record, token, _hold(wf, [problem], ctx), ctx)
                    return "held"
                return _retry_or_hold(wf, record, token, ctx, stage, exc, batch, progressed)
            except (LeaseLost, KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # a bug: hold the record for an admin, keep the batch going
                log.exception("stage %s failed for record %s", stage_name, record.pk)
                problem = Problem("internal_error", f"Handoff failed at stage “{stage.label}”: {exc}", [],
                                  "handoff", traceback.format_exc()[-3000:])
                _commit(record, token, _hold(wf, [problem], ctx), ctx)
                return "held"
            if stage.system_role:
                for conn in _called_connections(record, stage, batch, ctx):
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
            fields = {**_kept(ctx), "stage": nxt or stage_name, "attempts": 0,
                      **summary_fields(record, ctx.payload, ctx.context),
                      "lease_expires_at": timezone.now() + timedelta(seconds=settings.HANDOFF_LEASE_SECONDS)}
            if nxt is None:
                fields.update(succeeded_fields(now=timezone.now()))
            _commit(record, token, fields, ctx, ctx.apply_fns)
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
        **_kept(ctx), "status": SyncRecord.Status.RETRYING, "lease_token": None, "lease_expires_at": None,
        "next_attempt_at": timezone.now() + timedelta(seconds=PAUSE_RECHECK_SECONDS),
        "reason_code": "connection_paused", "failed_system": paused.kind,
        "message": f"Waiting: {paused.name} is paused"
                   f"{' (' + paused.paused_reason + ')' if paused.paused_reason else ''}.",
        **({"attempts": 0} if progressed else {})}, ctx)


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


def _called_connections(record: SyncRecord, stage, batch: Batch, ctx: StageContext) -> list[Connection]:
    conn = _stage_connection(record, stage, batch)
    if conn is not None:
        return [conn]
    kinds = {a.system for a in ctx.recorder.pending if a.stage == stage.name and a.outcome == "ok"}
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
        fields = _hold(wf, [problem], ctx)
        fields.update(attempts=attempts, status=SyncRecord.Status.DEAD, owner_team="integration_admin")
        _commit(record, token, fields, ctx)
        return "dead"
    delay = backoff_seconds(conn or record.source_connection, attempts, exc.retry_after)
    _commit(record, token, {
        **_kept(ctx), "status": SyncRecord.Status.RETRYING, "attempts": attempts, "lease_token": None,
        "lease_expires_at": None, "next_attempt_at": timezone.now() + timedelta(seconds=delay),
        "reason_code": "downstream_unavailable",
        "message": f"{exc.message}; retry {attempts} of {max_attempts - 1} in {delay:.0f} s",
        "failed_system": exc.system, "system_message": exc.message[:4000]}, ctx)
    return "retrying"


def drain(queue_name: str = "default", *, max_seconds: float = 30.0, run: SyncRun | None = None,
          batch_size: int | None = None) -> Counter:
    """Work due records of one queue's priorities in batches until none is due or time is up."""
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
