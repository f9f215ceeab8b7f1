"""The run of a confirmed bulk action (in RQ: bulk_jobs.run_bulk), chunk by chunk: each chunk is checked again
(still held, same version as at the preview, the actor's team, the workflow's rules) and changed with ONE
conditional UPDATE, in one transaction with its audit rows; the progress is written after every chunk."""

from __future__ import annotations

import json
import logging
import traceback

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from .bulk import VALIDATING, BulkError
from .bulk_checks import (CHANGED, NOT_HELD, Tally, action_scope, chunked, load_rows, skip_reason,
                          validate_records)
from .models import AuditEntry, BulkAction, SyncRecord
from .record_states import ignored_fields, reset_fields, restart_stage, sql_assignments
from .services import apply_changes
from .wakeup import PRIORITY_QUEUE, wake
from .workflows.catalog import get_workflow

log = logging.getLogger("handoff.bulk")

RUN_CHUNK = 500
AUDIT_ACTIONS = {"resubmit": "bulk_resubmit", "fix": "bulk_fix", "assign": "bulk_assign", "ignore": "bulk_ignore"}


def bulk_run(bulk_id: int) -> dict:
    """Carry out a confirmed bulk action, chunk by chunk. Returns the counts."""
    now = timezone.now()
    n = (BulkAction.objects.filter(pk=bulk_id, status=BulkAction.Status.QUEUED)
         .update(status=BulkAction.Status.RUNNING))
    if n == 0:  # already run (or running): a second delivery of the job does nothing
        return {"skipped": True}
    bulk = BulkAction.objects.select_related("actor").get(pk=bulk_id)
    lines: list[dict] = [{"at": now.isoformat(), "info": f"started: {bulk.action} of {bulk.total} records"}]
    failures = Tally()
    counts = {"done": 0, "succeeded": 0, "failed": 0}
    try:
        refs: dict = {}
        if bulk.action == "assign" and not get_user_model().objects.filter(
                pk=bulk.params.get("assignee_id"), is_active=True).exists():
            raise BulkError(f"The assignee “{bulk.params.get('assignee')}” is no longer an active user.")
        may_act = action_scope(bulk.actor, bulk.action, bulk.params)
        versions = {int(k): v for k, v in (bulk.preview or {}).get("versions", {}).items()}
        for i, chunk in enumerate(chunked(list(bulk.record_ids), RUN_CHUNK), 1):
            chunk_failures = Tally()
            with transaction.atomic():
                ok = _run_chunk(bulk, chunk, versions, may_act, refs, chunk_failures)
                failures.merge(chunk_failures)
                counts["done"] += len(chunk)
                counts["succeeded"] += ok
                counts["failed"] += len(chunk) - ok
                lines.append({"at": timezone.now().isoformat(),
                              "info": f"chunk {i}: {len(chunk)} records, {ok} done, {len(chunk) - ok} skipped"})
                BulkAction.objects.filter(pk=bulk_id).update(**counts, log=lines + _failure_lines(failures))
    except Exception as exc:
        log.exception("bulk %s failed", bulk_id)
        error = str(exc) if isinstance(exc, BulkError) else f"{exc.__class__.__name__}: {exc}"
        lines.append({"at": timezone.now().isoformat(), "error": error,
                      "traceback": traceback.format_exc()[-4000:]})
        BulkAction.objects.filter(pk=bulk_id).update(status=BulkAction.Status.FAILED, completed_at=timezone.now(),
                                                     log=lines + _failure_lines(failures))
        raise
    lines.append({"at": timezone.now().isoformat(),
                  "info": f"finished: {counts['succeeded']} done, {counts['failed']} skipped"})
    BulkAction.objects.filter(pk=bulk_id).update(status=BulkAction.Status.DONE, completed_at=timezone.now(),
                                                 log=lines + _failure_lines(failures))
    return counts


def _failure_lines(failures: Tally) -> list[dict]:
    return [{"failed": r["reason"], "label": r["label"], "count": r["count"], "examples": r["examples"],
             "message": r["message"]} for r in failures.rows()]


def failures_of(bulk: BulkAction) -> list[dict]:
    """The run's skipped records per reason (from its log), for the progress view."""
    return [e for e in (bulk.log or []) if isinstance(e, dict) and "failed" in e]


def _run_chunk(bulk: BulkAction, chunk: list[int], versions: dict[int, int], may_act, refs: dict,
               failures: Tally) -> int:
    """One chunk in one transaction: check, one conditional UPDATE, the audit rows. Returns how many changed."""
    action = bulk.action
    rows = load_rows(chunk, with_payload=action in VALIDATING,
                     extra=("assignee__username",) if action == "assign" else ())
    candidates: list[dict] = []
    for rid in chunk:
        row = rows.get(rid)
        expected = versions.get(rid)
        if row is None:
            failures.add(NOT_HELD, rid)
        elif expected is None:  # not eligible at preview time: report why it still is not (or that it changed)
            failures.add(skip_reason(row, may_act) or CHANGED, rid)
        elif row["version"] != expected:
            failures.add(CHANGED, rid)
        elif (skip := skip_reason(row, may_act)) is not None:
            failures.add(skip, rid)
        else:
            candidates.append(row)
    if not candidates:
        return 0
    reason = f"bulk #{bulk.pk}"
    if bulk.params.get("note"):
        reason += f": {bulk.params['note']}"
    if action in VALIDATING:
        audits = _resubmit(bulk, candidates, reason, refs, failures)
    elif action == "assign":
        updated = _conditional_update([(r["id"], r["version"]) for r in candidates],
                                      {"assignee": bulk.params["assignee_id"]})
        audits = [AuditEntry(actor=bulk.actor, record_id=r["id"], action=AUDIT_ACTIONS[action],
                             before={"assignee": r["assignee__username"]},
                             after={"assignee": bulk.params["assignee"]}, reason=reason)
                  for r in candidates if r["id"] in updated]
    elif action == "ignore":
        updated = _conditional_update([(r["id"], r["version"]) for r in candidates],
                                      ignored_fields(now=timezone.now()))
        audits = [AuditEntry(actor=bulk.actor, record_id=r["id"], action=AUDIT_ACTIONS[action],
                             before={"status": r["status"]}, after={"status": SyncRecord.Status.IGNORED},
                             reason=f"bulk #{bulk.pk}: {bulk.params['reason']}")
                  for r in candidates if r["id"] in updated]
    else:
        raise BulkError(f"Unknown bulk action “{action}”.")
    if action not in VALIDATING:
        for r in candidates:
            if r["id"] not in updated:
                failures.add(CHANGED, r["id"])
    AuditEntry.objects.bulk_create(audits, batch_size=RUN_CHUNK)
    return len(audits)


def _resubmit(bulk: BulkAction, candidates: list[dict], reason: str, refs: dict, failures: Tally) -> list:
    """Resubmit (with the fix, if any) the candidates that pass their workflow's rules, each from the stage
    record_resubmit would choose. Returns the audit rows of the records changed."""
    changes = (bulk.params or {}).get("changes") or {}
    applied = [apply_changes(r["current_payload"], changes) if changes else (r["current_payload"], {}, {})
               for r in candidates]
    problems = validate_records(candidates, [a[0] for a in applied], refs)
    todo = []
    for row, (payload, before, after), probs in zip(candidates, applied, problems):
        if probs:
            failures.add(probs[0].reason, row["id"], " ".join(p.message for p in probs))
            continue
        stage = restart_stage(get_workflow(row["workflow"]), stage=row["stage"], changed=bool(after))
        todo.append((row, payload, before, after, stage))
    fix = bulk.action == "fix"
    per_row = (("stage", "varchar"),) + ((("current_payload", "jsonb"),) if fix else ())
    updated = _conditional_update(
        [(row["id"], row["version"], stage, *((json.dumps(payload),) if fix else ()))
         for row, payload, _, _, stage in todo],
        reset_fields(stage="", now=timezone.now()), per_row=per_row)
    for p in sorted({row["priority"] for row, *_ in todo if row["id"] in updated}):
        wake(f"records:{PRIORITY_QUEUE.get(p, 'default')}")
    for row, *_ in todo:
        if row["id"] not in updated:
            failures.add(CHANGED, row["id"])
    return [AuditEntry(actor=bulk.actor, record_id=row["id"], action=AUDIT_ACTIONS[bulk.action],
                       before={**before, "status": row["status"], "stage": row["stage"]},
                       after={**after, "status": SyncRecord.Status.PENDING, "stage": stage},
                       reason=f"{reason} (re-run from {stage})")
            for row, _, before, after, stage in todo if row["id"] in updated]


def _conditional_update(rows: list[tuple], fields: dict, per_row: tuple[tuple[str, str], ...] = ()) -> set[int]:
    """One UPDATE … FROM (VALUES …) for a chunk: each record changes only if still held (or dead) and still at
    the version the preview saw. rows: (id, version, *a value per `per_row` column (name, SQL type)); `fields`
    are set alike on every row, the per-row columns from the row's values. Returns the ids changed."""
    if not rows:
        return set()
    qn = connection.ops.quote_name
    opts = SyncRecord._meta
    own = {name for name, _ in per_row}
    sets, params = sql_assignments({**{k: v for k, v in fields.items() if k not in own},
                                    "updated_at": timezone.now()})
    sets += [f"{qn(opts.get_field(name).column)} = v.{qn(name)}" for name, _ in per_row]
    sets.append(f"{qn('version')} = r.{qn('version')} + 1")
    row_sql = "(" + ", ".join(["%s::bigint", "%s::integer", *(f"%s::{t}" for _, t in per_row)]) + ")"
    columns = ", ".join(["id", "version", *(qn(name) for name, _ in per_row)])
    held = [s.value for s in SyncRecord.ACTIONABLE]
    sql = (f"UPDATE {qn(opts.db_table)} AS r SET {', '.join(sets)} "
           f"FROM (VALUES {', '.join([row_sql] * len(rows))}) AS v ({columns}) "
           f"WHERE r.id = v.id AND r.version = v.version AND r.status IN ({', '.join(['%s'] * len(held))}) "
           f"RETURNING r.id")
    with connection.cursor() as cur:
        cur.execute(sql, [*params, *(value for row in rows for value in row), *held])
        return {row[0] for row in cur.fetchall()}
