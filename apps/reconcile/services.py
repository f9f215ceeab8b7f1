"""Reconciliation runs: compute every engagement-month of a period range in one query (figures.py), apply the
rules (rules.py), write the lines in bulk (COPY), and keep the finance-ops exceptions in step — all in one
transaction.

Exceptions (workflow `reconciliation`, apps/sync/workflows/reconciliation.py), one per engagement-month, found by
source key `recon:<engagement code>:<YYYY-MM>` on the ERP connection:
- a variance above the tolerance with no record → a held record (reason reconciliation_variance, finance ops, P1);
- still above and the record is held (or dead) → its figures are refreshed when they changed (version bumped, so a
  person editing it meanwhile gets a conflict, not a silent overwrite); unchanged → not written at all;
- above again on a record that was resolved → re-opened (held), audited "reopened"; a record a person accepted
  (or ignored) stays closed while the variance is exactly the one they saw, and is re-opened when it differs;
- an open record whose month is in the range and whose variance is gone → succeeded, audited "resolved";
- a record a worker is re-checking right now (pending / retrying / in progress) is left to that worker.
Running twice on the same data writes the same lines and touches no record the second time.

Only one run at a time (a PostgreSQL advisory lock); a run that finds another in progress is recorded as skipped.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from apps.canonical.models import Engagement
from apps.finance.models import FinancePolicy
from apps.finance.money import month_start
from apps.sync import desk
from apps.sync.models import AuditEntry, Connection, SyncRecord
from apps.sync.record_states import held_fields, succeeded_fields
from apps.sync.workflows import reconciliation as wf

from . import figures, rules
from .models import ReconciliationLine, ReconciliationRun, source_key

log = logging.getLogger("handoff.reconcile")

LOCK_KEY = 0x4E_C0_11_C1  # pg_try_advisory_lock: one reconciliation run at a time
MONTHS = 12  # the default range: the last 12 complete months
MAX_MONTHS = 36  # the widest range a person may ask for
KEEP_RUNS = 14  # lines of the newest completed runs are kept; older runs keep only their summary
BATCH = 5000
QUEUED_TOO_LONG = timedelta(hours=1)
RUN_TEAMS = {"finance_ops", "integration_admin"}
CHECKING = (SyncRecord.Status.PENDING, SyncRecord.Status.RETRYING, SyncRecord.Status.IN_PROGRESS)


class NotAllowed(Exception):
    pass


class BadRange(ValueError):
    pass


# ---------------------------------------------------------------- who, when, which months


def can_run(user) -> bool:
    """Finance ops and integration admins (the teams that own reconciliation exceptions and runs) may start a
    run; viewers and PMO may not."""
    if not user or not user.is_authenticated:
        return False
    if user.is_superuser:
        return True
    return user.has_perm("sync.resubmit_syncrecord") and bool(desk.user_teams(user) & RUN_TEAMS)


def default_range(today: date | None = None) -> tuple[date, date]:
    """The last MONTHS complete months: revenue is recognised at month end, so the current month is not final."""
    today = today or timezone.localdate()
    last = figures.add_months(month_start(today), -1)
    return figures.add_months(last, -(MONTHS - 1)), last


def check_range(period_from: date, period_to: date, today: date | None = None) -> tuple[date, date]:
    today = today or timezone.localdate()
    a, b = month_start(period_from), month_start(period_to)
    if a > b:
        raise BadRange("The first month is after the last month.")
    if b > month_start(today):
        raise BadRange("The last month cannot be in the future.")
    months = (b.year - a.year) * 12 + b.month - a.month + 1
    if months > MAX_MONTHS:
        raise BadRange(f"At most {MAX_MONTHS} months at once ({months} asked).")
    return a, b


# ---------------------------------------------------------------- starting runs


def request_run(*, actor, period_from: date | None = None, period_to: date | None = None) -> ReconciliationRun:
    """The "Run now" button: permission-checked, audited, queued for a worker (the page shows its progress)."""
    if not can_run(actor):
        raise NotAllowed("Only finance ops and integration admins may run the reconciliation.")
    a, b = default_range() if period_from is None or period_to is None else check_range(period_from, period_to)
    with transaction.atomic():
        run = ReconciliationRun.objects.create(trigger=ReconciliationRun.Trigger.MANUAL, requested_by=actor,
                                               period_from=a, period_to=b)
        AuditEntry.objects.create(actor=actor, record=None, action="reconciliation_run", before={},
                                  after={"run": run.pk, "from": f"{a:%Y-%m}", "to": f"{b:%Y-%m}"},
                                  reason="Run now")
        transaction.on_commit(lambda: enqueue(run))
    return run


def enqueue(run: ReconciliationRun) -> bool:
    import django_rq
    from redis.exceptions import RedisError

    try:
        job = django_rq.get_queue("default", commit_mode="auto").enqueue(
            "apps.reconcile.jobs.run_queued", run.pk, job_timeout=3600, result_ttl=3600, failure_ttl=86400)
    except RedisError as exc:
        log.warning("reconciliation run %s not queued: %s", run.pk, exc)
        ReconciliationRun.objects.filter(pk=run.pk, status=ReconciliationRun.Status.QUEUED).update(
            status=ReconciliationRun.Status.FAILED, finished_at=timezone.now(),
            message=f"Could not be queued (Redis unreachable: {exc}). Try again.")
        return False
    ReconciliationRun.objects.filter(pk=run.pk).update(rq_job_id=job.id)
    return True


def run_now(*, trigger: str, period_from: date | None = None, period_to: date | None = None,
            engagement_ids: list[int] | None = None) -> ReconciliationRun:
    """Create a run and execute it in this process (nightly job, management command, tests, bench)."""
    a, b = default_range() if period_from is None or period_to is None else check_range(period_from, period_to)
    run = ReconciliationRun.objects.create(trigger=trigger, period_from=a, period_to=b)
    return execute(run, engagement_ids=engagement_ids)


# ---------------------------------------------------------------- the run


def execute(run: ReconciliationRun, *, engagement_ids: list[int] | None = None) -> ReconciliationRun:
    """Compute, write the lines, sync the exceptions, finish the run. All-or-nothing (one transaction)."""
    with connection.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY])
        locked = cur.fetchone()[0]
    if not locked:
        ReconciliationRun.objects.filter(pk=run.pk).update(
            status=ReconciliationRun.Status.SKIPPED, finished_at=timezone.now(),
            message="Another reconciliation run was in progress; this one did nothing.")
        run.refresh_from_db()
        return run
    try:
        now = timezone.now()
        ReconciliationRun.objects.filter(status=ReconciliationRun.Status.QUEUED, created_at__lt=now - QUEUED_TOO_LONG
                                         ).exclude(pk=run.pk).update(
            status=ReconciliationRun.Status.FAILED, finished_at=now, message="Never started: its job was lost.")
        tolerance = FinancePolicy.current().reconciliation_tolerance
        run.status, run.started_at, run.tolerance = ReconciliationRun.Status.RUNNING, now, tolerance
        run.save(update_fields=["status", "started_at", "tolerance"])
        try:
            with transaction.atomic():
                counts, warning = _reconcile(run, tolerance, engagement_ids)
                run.status = ReconciliationRun.Status.COMPLETED
                run.finished_at = timezone.now()
                run.message = warning
                for k, v in counts.items():
                    setattr(run, k, v)
                run.save()
        except Exception as exc:
            log.exception("reconciliation run %s failed", run.pk)
            ReconciliationRun.objects.filter(pk=run.pk).update(
                status=ReconciliationRun.Status.FAILED, finished_at=timezone.now(), message=f"{type(exc).__name__}: "
                                                                                           f"{exc}"[:4000])
            run.refresh_from_db()
            raise
        prune()
        return run
    finally:
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])


LINE_COLUMNS = ["run_id", "engagement_id", "engagement_code", "period", "contract_type", "currency", "delivered",
                "billed", "recognised", "expected", "compared", "variance", "over_tolerance"]


def _write_lines(rows: list[tuple]) -> None:
    """Bulk insert with PostgreSQL COPY (in the run's transaction): ~10× cheaper per line than bulk_create's
    multi-row INSERT, which matters at 60,000 lines a night."""
    cols = ", ".join(LINE_COLUMNS)
    with connection.cursor() as cur:
        with cur.cursor.copy(f"COPY {ReconciliationLine._meta.db_table} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def _reconcile(run: ReconciliationRun, tolerance, engagement_ids) -> tuple[dict, str]:
    results: dict[str, tuple[figures.Row, rules.Result]] = {}
    batch: list[tuple] = []
    n_lines = n_over = 0
    for row in figures.compute(run.period_from, run.period_to, engagement_ids):
        f = row.figures
        res = rules.reconcile(f, tolerance)
        results[source_key(row.engagement_code, f.period)] = (row, res)
        batch.append((run.pk, row.engagement_id, row.engagement_code, f.period, f.contract_type, f.currency,
                      res.delivered, res.billed, res.recognised, res.expected, ",".join(res.compared), res.variance,
                      res.over_tolerance))
        n_lines += 1
        n_over += res.over_tolerance
        if len(batch) >= BATCH:
            _write_lines(batch)
            batch = []
    if batch:
        _write_lines(batch)
    synced, warning = sync_exceptions(run, results, tolerance, engagement_ids)
    return {"lines": n_lines, "over_tolerance": n_over, **synced}, warning


# ---------------------------------------------------------------- exceptions


def erp_connection() -> Connection | None:
    return Connection.objects.filter(role=Connection.Role.ERP, enabled=True).order_by("id").first()


def _in_range(key: str, run: ReconciliationRun) -> bool:
    period = wf.parse_period(key.rsplit(":", 1)[-1])
    return period is not None and run.period_from <= period <= run.period_to


def _held_fields(record: SyncRecord, payload: dict, context: dict, held_at) -> dict:
    # the exception is about the ERP's figures, though Handoff's own rule raised it
    return held_fields(wf.WORKFLOW, [wf.variance_problem(payload)], record=record, stage=wf.STAGE, payload=payload,
                       context=context, held_at=held_at, target_system="erp")


def _apply(record: SyncRecord, fields: dict) -> None:
    for k, v in fields.items():
        setattr(record, k, v)


def _payload(row: figures.Row, res: rules.Result, tolerance, reason: str = "") -> dict:
    f = row.figures
    return wf.payload_for(engagement_id=row.engagement_id, engagement_code=row.engagement_code, period=f.period,
                          result=res, currency=f.currency, contract_type=f.contract_type, tolerance=tolerance,
                          accepted_variance_reason=reason)


def _decided(record: SyncRecord, res: rules.Result) -> bool:
    """A person closed it (accepted the variance, or ignored the record) and the variance is still the one they
    saw: leave it closed."""
    if record.status == SyncRecord.Status.IGNORED:
        return record.current_payload.get("variance") == str(res.variance)
    accepted = (record.context or {}).get("accepted")
    return bool(accepted) and accepted.get("variance") == str(res.variance)


def sync_exceptions(run: ReconciliationRun, results: dict, tolerance, engagement_ids=None) -> tuple[dict, str]:
    """Open, refresh, re-open and resolve the exception records of this run's range (see the module docstring).
    Bulk: one read of the records concerned, bulk_create / bulk_update, one audit insert."""
    counts = {"opened": 0, "updated": 0, "resolved": 0}
    erp = erp_connection()
    over = {k for k, (_, res) in results.items() if res.over_tolerance}
    if erp is None:
        return counts, (f"No enabled ERP connection: {len(over)} variance(s) above the tolerance were not raised "
                        f"as exceptions." if over else "")
    now = timezone.now()
    open_q = Q(status__in=SyncRecord.ACTIONABLE)
    if engagement_ids is not None:
        open_q &= Q(current_payload__engagement_id__in=list(engagement_ids))
    existing = {}
    over_list = sorted(over)
    # lock what we may change; rows a worker holds right now are skipped (it is re-checking them)
    base = SyncRecord.objects.select_for_update(skip_locked=True).filter(workflow=wf.NAME, source_connection=erp)
    for i in range(0, max(len(over_list), 1), BATCH):
        chunk = over_list[i:i + BATCH]
        q = Q(source_key__in=chunk) | open_q if i == 0 else Q(source_key__in=chunk)
        for r in base.filter(q):
            existing[r.source_key] = r
    to_update: list[SyncRecord] = []
    audits: list[AuditEntry] = []
    # 1. above the tolerance: open, refresh or re-open
    new_keys = [k for k in over_list if k not in existing]
    correlation = dict(Engagement.objects.filter(pk__in={results[k][0].engagement_id for k in new_keys})
                       .values_list("id", "correlation_id")) if new_keys else {}
    new_records = []
    for key in new_keys:
        row, res = results[key]
        payload = _payload(row, res, tolerance)
        r = SyncRecord(workflow=wf.NAME, source_connection=erp, source_key=key,
                       correlation_id=correlation[row.engagement_id], original_payload=payload)
        _apply(r, _held_fields(r, payload, {"engagement_code": row.engagement_code}, now))
        new_records.append(r)
    for key in over_list:
        r = existing.get(key)
        if r is None or r.status in CHECKING:
            continue
        row, res = results[key]
        if r.status in SyncRecord.ACTIONABLE:
            payload = _payload(row, res, tolerance, r.current_payload.get("accepted_variance_reason") or "")
            if wf.figures_changed(r.current_payload, payload):
                _apply(r, _held_fields(r, payload, r.context, r.held_at or now))
                r.version += 1
                to_update.append(r)
                counts["updated"] += 1
        elif not _decided(r, res):  # succeeded (resolved or accepted another variance) or ignored
            before = {"status": r.status, "variance": r.current_payload.get("variance")}
            context = dict(r.context or {})
            context.pop("accepted", None)
            payload = _payload(row, res, tolerance)
            _apply(r, _held_fields(r, payload, context, now))
            r.version += 1
            to_update.append(r)
            counts["opened"] += 1
            audits.append(AuditEntry(actor=None, record=r, action="reopened", before=before,
                                     after={"status": "held", "variance": payload["variance"]},
                                     reason=f"Re-opened by reconciliation run #{run.pk}: variance "
                                            f"{payload['variance']} {payload['currency']} above the tolerance "
                                            f"{tolerance}."))
    # 2. open records of this range whose variance is gone
    for key, r in existing.items():
        if key in over or r.status not in SyncRecord.ACTIONABLE or not _in_range(key, run):
            continue
        if key in results:
            row, res = results[key]
            payload = _payload(row, res, tolerance, r.current_payload.get("accepted_variance_reason") or "")
        else:  # nothing at all left for that month: every figure is zero
            payload = {**r.current_payload, **{k: "0.00" for k in ("delivered", "billed", "recognised", "variance")},
                       "expected": None, "tolerance": str(tolerance)}
        before = {"status": r.status, "variance": r.current_payload.get("variance")}
        r.current_payload = payload
        _apply(r, succeeded_fields(now=now))
        r.context = {**(r.context or {}), "resolved": {"at": now.isoformat(), "variance": payload["variance"],
                                                      "by": f"reconciliation run #{run.pk}"}}
        r.version += 1
        to_update.append(r)
        counts["resolved"] += 1
        audits.append(AuditEntry(actor=None, record=r, action="resolved", before=before,
                                 after={"status": "succeeded", "variance": payload["variance"]},
                                 reason=f"Resolved by reconciliation run #{run.pk}: the variance is now "
                                        f"{payload['variance']} {payload.get('currency', '')} (tolerance "
                                        f"{tolerance})."))
    if new_records:
        made = SyncRecord.objects.bulk_create(new_records, batch_size=1000, ignore_conflicts=True)
        counts["opened"] += len(made)
    if to_update:
        for r in to_update:
            r.updated_at = now  # bulk_update does not apply auto_now
        SyncRecord.objects.bulk_update(to_update, UPDATE_FIELDS, batch_size=500)
    if audits:
        AuditEntry.objects.bulk_create(audits, batch_size=1000)
    return counts, ""


UPDATE_FIELDS = ["stage", "status", "reason_code", "message", "fault_fields", "failed_system", "system_message",
                 "owner_team", "error_signature", "target_system", "held_at", "completed_at", "attempts",
                 "next_attempt_at", "lease_token", "lease_expires_at", "current_payload", "context", "title", "amount",
                 "currency", "priority", "priority_reason", "search_keys", "version", "updated_at"]


def prune(keep: int = KEEP_RUNS) -> int:
    """Delete the lines of completed runs older than the newest `keep` (the runs themselves stay)."""
    kept = list(ReconciliationRun.objects.filter(status=ReconciliationRun.Status.COMPLETED)
                .order_by("-finished_at", "-id").values_list("id", flat=True)[:keep])
    if len(kept) < keep:
        return 0
    n, _ = ReconciliationLine.objects.filter(run__status=ReconciliationRun.Status.COMPLETED).exclude(
        run_id__in=kept).delete()
    return n
