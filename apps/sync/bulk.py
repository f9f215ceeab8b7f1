"""Bulk actions on held records: resubmit, assign, ignore, or apply one fix to all (then resubmit).

Always in two steps. `bulk_preview` says what would happen — how many records, how many the user may act on,
which would pass the workflow's rules now and which would still fail (and why), which are no longer held — and
stores that in a BulkAction, with each eligible record's version. `bulk_confirm` (by the same user) queues one
RQ job, which carries it out (bulk_run.py): a record is only changed if it is still held and nobody changed it
since the preview, so a bulk action never overwrites somebody's later edit. The checks both steps make for each
record are in bulk_checks.py; they are the single-record actions' own rules (desk.actor_scope,
record_states.restart_stage, the workflow's validate), decided once per chunk.
"""

from __future__ import annotations

import logging
from typing import Iterable

import django_rq
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from redis.exceptions import RedisError

from .bulk_checks import (EXAMPLES, NOT_ALLOWED, NOT_HELD, BulkError, Tally, action_scope, any_fix_field,
                          check_actor, chunked, fix_fields_for, load_rows, skip_reason, validate_records)
from .desk import actor_scope
from .errors import NotAllowed
from .models import BulkAction, SyncRecord
from .services import apply_changes
from .workflows.catalog import get_workflow

log = logging.getLogger("handoff.bulk")

ACTIONS = ("resubmit", "fix", "assign", "ignore")
VALIDATING = ("resubmit", "fix")
MAX_RECORDS = 50_000
PREVIEW_CHUNK = 2_000
JOB_FUNC = "apps.sync.bulk_jobs.run_bulk"


# ---------------------------------------------------------------- parameters


def clean_params(action: str, params: dict) -> dict:
    """The parameters an action needs, checked: fix → {"changes": {path: value}}, assign → {"assignee": username,
    "assignee_id": id}, ignore → {"reason": text}; every action may carry a "note" for the audit trail."""
    if action not in ACTIONS:
        raise BulkError(f"Unknown bulk action “{action}”: use one of {', '.join(ACTIONS)}.")
    params = dict(params or {})
    out: dict = {}
    note = str(params.get("note") or "").strip()[:500]
    if note:
        out["note"] = note
    if action == "fix":
        changes = params.get("changes") or {}
        if not isinstance(changes, dict):
            raise BulkError("The fix must name fields and values.")
        # a field no workflow offers; the preview checks the fields against the selected records' workflows
        unknown = sorted(set(changes) - any_fix_field())
        if unknown:
            raise BulkError(f"These fields cannot be set by a fix: {', '.join(unknown)}.")
        changes = {k: str(v) for k, v in changes.items() if str(v or "").strip()}
        if not changes:
            raise BulkError("Say which field to set, and to what (e.g. legal entity US01).")
        out["changes"] = changes
    elif action == "assign":
        username = str(params.get("assignee") or "").strip()
        if not username:
            raise BulkError("Choose the person to assign the records to.")
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise BulkError(f"There is no active user “{username}”.")
        if not any(map(actor_scope(user), SyncRecord.Team.values)):
            raise BulkError(f"{username} cannot act on held records: assign them to someone who can.")
        out.update(assignee=user.get_username(), assignee_id=user.pk)
    elif action == "ignore":
        reason = str(params.get("reason") or "").strip()
        if not reason:
            raise BulkError("A reason is required to resolve records without resubmitting them.")
        out["reason"] = reason[:2000]
    return out


def unique_ids(ids: Iterable) -> list[int]:
    """The selected ids as integers, each once, in the order given."""
    seen: dict[int, None] = {}
    for i in ids:
        try:
            seen.setdefault(int(i), None)
        except (TypeError, ValueError):
            raise BulkError(f"“{i}” is not a record id.") from None
    return list(seen)


# ---------------------------------------------------------------- preview


def bulk_preview(*, actor, action: str, record_ids: list[int], params: dict,
                 filter_query: str = "") -> BulkAction:
    """What the bulk action would do, stored as a BulkAction ("previewed"). Changes no record."""
    params = clean_params(action, params)
    check_actor(actor, action)
    ids = unique_ids(record_ids)
    if not ids:
        raise BulkError("Select at least one record.")
    if len(ids) > MAX_RECORDS:
        raise BulkError(f"{len(ids):,} records are selected; a bulk action takes at most {MAX_RECORDS:,}. "
                        f"Narrow the filter.")
    may_act = action_scope(actor, action, params)
    validating = action in VALIDATING
    changes = params.get("changes") or {}
    refs: dict = {}
    not_held, not_allowed, still_fail = Tally(), Tally(), Tally()
    would_pass: list[int] = []
    would_pass_count = 0
    versions: dict[str, int] = {}
    for chunk in chunked(ids, PREVIEW_CHUNK):
        rows = load_rows(chunk, with_payload=validating)
        eligible: list[dict] = []
        for rid in chunk:
            row = rows.get(rid)
            skip = NOT_HELD if row is None else skip_reason(row, may_act)
            if skip is not None:
                (not_held if skip == NOT_HELD else not_allowed).add(skip, rid)
            else:
                eligible.append(row)
                versions[str(rid)] = row["version"]
        _check_fixable(changes, {r["workflow"] for r in eligible})
        if validating and eligible:
            payloads = [apply_changes(r["current_payload"], changes)[0] if changes else r["current_payload"]
                        for r in eligible]
            problems = validate_records(eligible, payloads, refs)
        else:
            problems = [[] for _ in eligible]
        for row, probs in zip(eligible, problems):
            if probs:
                still_fail.add(probs[0].reason, row["id"], " ".join(p.message for p in probs))
            else:
                would_pass_count += 1
                if len(would_pass) < EXAMPLES:
                    would_pass.append(row["id"])
    preview = {
        "total": len(ids),
        "allowed": len(versions),  # held records the actor may act on (would pass + still fail)
        "would_pass": {"count": would_pass_count, "examples": would_pass},
        "still_fail": {"count": still_fail.total(), "reasons": still_fail.rows()},
        "not_allowed": {"count": not_allowed.total(), "examples": not_allowed.examples[NOT_ALLOWED]},
        "not_held": {"count": not_held.total(), "examples": not_held.examples[NOT_HELD]},
        "versions": versions,  # record id → version at preview time: the run changes nothing changed since
    }
    return BulkAction.objects.create(actor=actor, action=action, filter_query=filter_query[:4000], record_ids=ids,
                                     params=params, status=BulkAction.Status.PREVIEWED, preview=preview,
                                     total=len(ids))


def _check_fixable(changes: dict, workflows: set[str]) -> None:
    """A fix sets only fields that every selected record's workflow offers on its own fix form."""
    unfixable = sorted(set(changes) - set(fix_fields_for(workflows))) if changes and workflows else []
    if unfixable:
        labels = ", ".join(sorted(get_workflow(w).label for w in workflows))
        raise BulkError(f"These fields cannot be set by a fix on {labels} records: {', '.join(unfixable)}. "
                        f"Select records of one workflow.")


def workflows_of(ids: list[int]) -> set[str]:
    """The workflows of the selected records (what the bulk fix form offers depends on them)."""
    return set(SyncRecord.objects.filter(pk__in=ids).order_by().values_list("workflow", flat=True)
               .distinct())


# ---------------------------------------------------------------- confirm


def bulk_confirm(*, bulk: BulkAction, actor) -> BulkAction:
    """Queue the previewed bulk action (one RQ job, enqueued once this transaction commits)."""
    if bulk.actor_id != actor.pk:
        raise NotAllowed("Only the person who previewed this bulk action can confirm it.")
    check_actor(actor, bulk.action)
    if not (bulk.preview or {}).get("would_pass", {}).get("count"):
        raise BulkError("Nothing to do: no record in this selection would go through.")
    job_id = f"handoff-bulk-{bulk.pk}"
    with transaction.atomic():
        n = (BulkAction.objects.filter(pk=bulk.pk, status=BulkAction.Status.PREVIEWED)
             .update(status=BulkAction.Status.QUEUED, rq_job_id=job_id))
        if n == 0:
            raise BulkError("This bulk action was already confirmed.")
        transaction.on_commit(lambda: _enqueue(bulk.pk, job_id))
    bulk.refresh_from_db()
    return bulk


def _enqueue(bulk_id: int, job_id: str) -> None:
    try:
        # already after commit: enqueue now, whatever RQ's commit mode says
        queue = django_rq.get_queue("default", commit_mode="auto")
        queue.enqueue(JOB_FUNC, bulk_id, job_id=job_id, job_timeout=3600, result_ttl=3600, failure_ttl=7 * 86400)
    except RedisError as exc:
        log.error("bulk %s could not be queued: %s", bulk_id, exc)
        BulkAction.objects.filter(pk=bulk_id, status=BulkAction.Status.QUEUED).update(
            status=BulkAction.Status.FAILED, completed_at=timezone.now(),
            log=[{"at": timezone.now().isoformat(), "error": f"Could not be queued (Redis): {exc}"}])
