"""Bulk actions on held records: resubmit, assign, ignore, or apply one fix to all (then resubmit).

Always in two steps. `bulk_preview` says what would happen — how many records, how many the user may act on,
which would pass the workflow's rules now and which would still fail (and why), which are no longer held — and
stores that in a BulkAction, with each eligible record's version. `bulk_confirm` (by the same user) queues one
RQ job, `bulk_run`, which works through the records in chunks of 500 with one conditional UPDATE per chunk: a
record is only changed if it is still held and nobody changed it since the preview (its version), so a bulk
action never overwrites somebody's later edit. Every change is audited, like the single-record actions
(services.py, desk.py), and the progress is written after every chunk.

Built for 10,000 records: records are read in chunks with only the columns needed, reference data is loaded
once, and the duplicate-customer rule is checked for a whole chunk in one query (`validate_many`).
"""

from __future__ import annotations

import json
import logging
import traceback
from collections import defaultdict
from typing import Callable, Iterable

import django_rq
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db import connection, transaction
from django.db.models.functions import Upper
from django.utils import timezone
from redis.exceptions import RedisError

from apps.canonical.models import Customer, ExternalId

from .desk import NotAllowed, assign_scope, team_scope
from .engine import PRIORITY_QUEUE
from .models import AuditEntry, BulkAction, SyncRecord
from .services import apply_changes
from .wakeup import wake
from .workflows import quote_to_project
from .workflows.base import Problem, all_workflows, get_workflow

log = logging.getLogger("handoff.bulk")

ACTIONS = ("resubmit", "fix", "assign", "ignore")
AUDIT_ACTIONS = {"resubmit": "bulk_resubmit", "fix": "bulk_fix", "assign": "bulk_assign", "ignore": "bulk_ignore"}
MAX_RECORDS = 50_000
PREVIEW_CHUNK = 2_000
RUN_CHUNK = 500
EXAMPLES = 5
JOB_FUNC = "apps.sync.bulk_jobs.run_bulk"

# why a record was not acted on (besides the workflow's own reason codes)
NOT_HELD = "not_held"
NOT_ALLOWED = "not_allowed"
CHANGED = "changed_since_preview"
SKIP_LABELS = {
    NOT_HELD: "no longer held",
    NOT_ALLOWED: "your role cannot act on it (or, assigning, the assignee's)",
    CHANGED: "changed since preview",
}


class BulkError(ValueError):
    """The bulk action cannot be previewed or confirmed as asked (bad parameters, nothing selected…)."""


# ---------------------------------------------------------------- who may act (desk.can_act, for many records)


def actor_scope(actor, action: str = "", params: dict | None = None) -> Callable[[str], bool]:
    """owner_team → may the actor act on a record of that team (desk's rule); for an assignment, may the
    assignee act on it too."""
    if action == "assign":
        assignee = get_user_model().objects.filter(pk=(params or {}).get("assignee_id")).first()
        return assign_scope(actor, assignee)
    return team_scope(actor)


# ---------------------------------------------------------------- validation for many records at once


def _needs_validation(stage: str, fetched) -> bool:
    """services.record_resubmit's rule: a HubSpot record not fetched yet has nothing to validate."""
    return stage != "fetch" or bool(fetched)


def validate_many(items: list[tuple[dict, str]], *, ref: quote_to_project.Reference | None = None
                  ) -> list[list[Problem]]:
    """quote_to_project.validate() for many (payload, source_kind) pairs, with the same result for each.

    Every rule but the last runs through validate() itself (with the reference data loaded once, they make no
    query). The last rule — the duplicate-customer check and the link to an existing customer — needs the
    database; here it is answered for all payloads with one query per kind of lookup instead of one per record.
    """
    ref = ref or quote_to_project.Reference.load()
    results: list[list[Problem]] = []
    link_pks: set[int] = set()
    dup_keys: set[tuple[str, str]] = set()
    plans: list[tuple] = []  # per item: ("link", pk) / ("dup", key, account_id) / None
    for payload, source_kind in items:
        # validate() with the duplicate rule switched off ("new" = "confirmed a different customer")
        results.append(quote_to_project.validate({**payload, "duplicate_resolution": "new"},
                                                 source_kind=source_kind, ref=ref))
        resolution = payload.get("duplicate_resolution") or ""
        account = payload.get("account") or {}
        if resolution.startswith("link:"):
            pk = _int_or_none(resolution[5:]) if resolution[5:].isdigit() else None
            if pk is not None:
                link_pks.add(pk)
            plans.append(("link", pk))
        elif resolution != "new" and account.get("name") and account.get("tax_id"):
            key = (account["name"].strip().upper(), account["tax_id"].strip())
            dup_keys.add(key)
            plans.append(("dup", key, quote_to_project.get_path(payload, "account.id"), source_kind))
        else:
            plans.append(None)

    existing = set(Customer.objects.filter(pk__in=link_pks).values_list("pk", flat=True)) if link_pks else set()
    candidates: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    if dup_keys:
        # one query for every (upper(name), tax_id) pair: a superset by name and by tax id, narrowed to the
        # exact pairs here (uses the customer_dup_check index)
        rows = (Customer.objects.annotate(uname=Upper("name"))
                .filter(uname__in={k[0] for k in dup_keys}, tax_id__in={k[1] for k in dup_keys})
                .order_by("name", "pk").values_list("uname", "tax_id", "pk", "name"))
        for uname, tax_id, pk, name in rows:
            if (uname, tax_id) in dup_keys:
                candidates[(uname, tax_id)].append((pk, name))
    # the account's own customer (never its own duplicate): only for payloads that have candidates
    own_ids = {(p[3], str(p[2])) for p in plans if p and p[0] == "dup" and candidates.get(p[1]) and p[2]}
    own: dict[tuple[str, str], int] = {}
    if own_ids:
        ct = ContentType.objects.get_for_model(Customer)
        for system, external_id, object_id in (
                ExternalId.objects.filter(content_type=ct, object_type="account",
                                          system__in={s for s, _ in own_ids},
                                          external_id__in={e for _, e in own_ids})
                .order_by("pk").values_list("system", "external_id", "object_id")):
            own.setdefault((system, external_id), object_id)

    for problems, plan in zip(results, plans):
        if plan is None:
            continue
        if plan[0] == "link":
            if plan[1] not in existing:
                problems.append(Problem("duplicate_customer_suspected",
                                        "The customer chosen to link to no longer exists.", ["duplicate_resolution"]))
            continue
        _, key, account_id, source_kind = plan
        own_pk = own.get((source_kind, str(account_id))) if account_id else None
        dups = [(pk, name) for pk, name in candidates.get(key, []) if pk != own_pk][:3]
        if dups:
            listing = ", ".join(f"#{pk} {name}" for pk, name in dups)
            problems.append(Problem("duplicate_customer_suspected",
                                    f"A customer with the same name and tax id already exists ({listing}). Link this "
                                    f"account to it, or confirm it is a different customer.",
                                    ["duplicate_resolution", "account.name", "account.tax_id"]))
    return results


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def validate_records(rows: list[dict], payloads: list[dict], ref) -> list[list[Problem]]:
    """Problems per row (rows carry workflow, stage, fetched, kind), batched per workflow where possible."""
    out: list[list[Problem] | None] = [None] * len(rows)
    batched: list[int] = []
    for i, row in enumerate(rows):
        if not _needs_validation(row["stage"], row["fetched"]):
            out[i] = []
            continue
        wf = get_workflow(row["workflow"])
        if wf.validate is quote_to_project.validate:
            batched.append(i)
        else:  # a workflow without a batched variant: one by one
            out[i] = wf.validate(payloads[i], source_kind=row["kind"])
    if batched:
        for i, problems in zip(batched, validate_many([(payloads[i], rows[i]["kind"]) for i in batched], ref=ref)):
            out[i] = problems
    return out  # type: ignore[return-value]


# ---------------------------------------------------------------- parameters


def _fix_fields() -> set[str]:
    return {f for wf in all_workflows() for f in wf.fix_fields}


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
        allowed = _fix_fields()
        unknown = sorted(set(changes) - allowed)
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
        if not any(map(team_scope(user), SyncRecord.Team.values)):
            raise BulkError(f"{username} cannot act on held records: assign them to someone who can.")
        out.update(assignee=user.get_username(), assignee_id=user.pk)
    elif action == "ignore":
        reason = str(params.get("reason") or "").strip()
        if not reason:
            raise BulkError("A reason is required to resolve records without resubmitting them.")
        out["reason"] = reason[:2000]
    return out


def _check_actor(actor, action: str) -> None:
    if not actor.has_perm("sync.resubmit_syncrecord"):
        raise NotAllowed("Your role cannot act on held records.")
    if action == "ignore" and not actor.has_perm("sync.ignore_syncrecord"):
        raise NotAllowed("Your role cannot resolve records without resubmitting them.")


def _chunks(seq: list, size: int) -> Iterable[list]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


def _unique(ids: Iterable) -> list[int]:
    seen: dict[int, None] = {}
    for i in ids:
        try:
            seen.setdefault(int(i), None)
        except (TypeError, ValueError):
            raise BulkError(f"“{i}” is not a record id.") from None
    return list(seen)


VALUE_FIELDS = ("id", "workflow", "stage", "status", "owner_team", "priority", "version")
PAYLOAD_FIELDS = ("current_payload", "context__fetched", "source_connection__kind")


def _load(ids: list[int], *, with_payload: bool, extra: tuple = ()) -> dict[int, dict]:
    fields = VALUE_FIELDS + (PAYLOAD_FIELDS if with_payload else ()) + extra
    rows = {}
    for row in SyncRecord.objects.filter(pk__in=ids).order_by().values(*fields):
        if with_payload:
            row["fetched"] = row.pop("context__fetched")
            row["kind"] = row.pop("source_connection__kind")
        rows[row["id"]] = row
    return rows


class _Tally:
    """reason → count and a few example ids (and a message), for the preview and the run's log."""

    def __init__(self):
        self.counts: dict[str, int] = defaultdict(int)
        self.examples: dict[str, list[int]] = defaultdict(list)
        self.messages: dict[str, str] = {}

    def add(self, reason: str, record_id: int, message: str = "") -> None:
        self.counts[reason] += 1
        if len(self.examples[reason]) < EXAMPLES:
            self.examples[reason].append(record_id)
        if message and reason not in self.messages:
            self.messages[reason] = message[:300]

    def merge(self, other: "_Tally") -> None:
        for reason, n in other.counts.items():
            self.counts[reason] += n
            self.examples[reason].extend(other.examples[reason][:EXAMPLES - len(self.examples[reason])])
            if reason in other.messages:
                self.messages.setdefault(reason, other.messages[reason])

    def total(self) -> int:
        return sum(self.counts.values())

    def rows(self) -> list[dict]:
        return [{"reason": r, "label": SKIP_LABELS.get(r, r.replace("_", " ")), "count": n,
                 "examples": self.examples[r], "message": self.messages.get(r, "")}
                for r, n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))]


# ---------------------------------------------------------------- preview


def bulk_preview(*, actor, action: str, record_ids: list[int], params: dict,
                 filter_query: str = "") -> BulkAction:
    """What the bulk action would do, stored as a BulkAction ("previewed"). Changes no record."""
    params = clean_params(action, params)
    _check_actor(actor, action)
    ids = _unique(record_ids)
    if not ids:
        raise BulkError("Select at least one record.")
    if len(ids) > MAX_RECORDS:
        raise BulkError(f"{len(ids):,} records are selected; a bulk action takes at most {MAX_RECORDS:,}. "
                        f"Narrow the filter.")
    may_act = actor_scope(actor, action, params)
    validating = action in ("resubmit", "fix")
    changes = params.get("changes") or {}
    ref = quote_to_project.Reference.load() if validating else None
    not_held, not_allowed, still_fail = _Tally(), _Tally(), _Tally()
    would_pass: list[int] = []
    would_pass_count = 0
    versions: dict[str, int] = {}
    for chunk in _chunks(ids, PREVIEW_CHUNK):
        rows = _load(chunk, with_payload=validating)
        eligible: list[dict] = []
        for rid in chunk:
            row = rows.get(rid)
            if row is None or row["status"] not in SyncRecord.ACTIONABLE:
                not_held.add(NOT_HELD, rid)
            elif not may_act(row["owner_team"]):
                not_allowed.add(NOT_ALLOWED, rid)
            else:
                eligible.append(row)
                versions[str(rid)] = row["version"]
        if validating and eligible:
            payloads = [apply_changes(r["current_payload"], changes)[0] if changes else r["current_payload"]
                        for r in eligible]
            problems = validate_records(eligible, payloads, ref)
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


# ---------------------------------------------------------------- confirm


def bulk_confirm(*, bulk: BulkAction, actor) -> BulkAction:
    """Queue the previewed bulk action (one RQ job, enqueued once this transaction commits)."""
    if bulk.actor_id != actor.pk:
        raise NotAllowed("Only the person who previewed this bulk action can confirm it.")
    _check_actor(actor, bulk.action)
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


# ---------------------------------------------------------------- the run (in RQ: bulk_jobs.run_bulk)


def bulk_run(bulk_id: int) -> dict:
    """Carry out a confirmed bulk action, chunk by chunk. Returns the counts."""
    now = timezone.now()
    n = (BulkAction.objects.filter(pk=bulk_id, status=BulkAction.Status.QUEUED)
         .update(status=BulkAction.Status.RUNNING))
    if n == 0:  # already run (or running): a second delivery of the job does nothing
        return {"skipped": True}
    bulk = BulkAction.objects.select_related("actor").get(pk=bulk_id)
    lines: list[dict] = [{"at": now.isoformat(), "info": f"started: {bulk.action} of {bulk.total} records"}]
    failures = _Tally()
    counts = {"done": 0, "succeeded": 0, "failed": 0}
    try:
        ref = quote_to_project.Reference.load() if bulk.action in ("resubmit", "fix") else None
        if bulk.action == "assign" and not get_user_model().objects.filter(
                pk=bulk.params.get("assignee_id"), is_active=True).exists():
            raise BulkError(f"The assignee “{bulk.params.get('assignee')}” is no longer an active user.")
        may_act = actor_scope(bulk.actor, bulk.action, bulk.params)
        versions = {int(k): v for k, v in (bulk.preview or {}).get("versions", {}).items()}
        for i, chunk in enumerate(_chunks(list(bulk.record_ids), RUN_CHUNK), 1):
            chunk_failures = _Tally()
            with transaction.atomic():
                ok = _run_chunk(bulk, chunk, versions, may_act, ref, chunk_failures)
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


def _failure_lines(failures: _Tally) -> list[dict]:
    return [{"failed": r["reason"], "label": r["label"], "count": r["count"], "examples": r["examples"],
             "message": r["message"]} for r in failures.rows()]


def failures_of(bulk: BulkAction) -> list[dict]:
    """The run's skipped records per reason (from its log), for the progress view."""
    return [e for e in (bulk.log or []) if isinstance(e, dict) and "failed" in e]


def _run_chunk(bulk: BulkAction, chunk: list[int], versions: dict[int, int], may_act, ref, failures: _Tally) -> int:
    """One chunk in one transaction: check, one conditional UPDATE, the audit rows. Returns how many changed."""
    action = bulk.action
    changes = (bulk.params or {}).get("changes") or {}
    validating = action in ("resubmit", "fix")
    rows = _load(chunk, with_payload=validating, extra=("assignee__username",) if action == "assign" else ())
    candidates: list[dict] = []
    for rid in chunk:
        row = rows.get(rid)
        expected = versions.get(rid)
        if row is None:
            failures.add(NOT_HELD, rid)
        elif expected is None:  # not eligible at preview time: report why it still is not (or that it changed)
            if row["status"] not in SyncRecord.ACTIONABLE:
                failures.add(NOT_HELD, rid)
            elif not may_act(row["owner_team"]):
                failures.add(NOT_ALLOWED, rid)
            else:
                failures.add(CHANGED, rid)
        elif row["version"] != expected:
            failures.add(CHANGED, rid)
        elif row["status"] not in SyncRecord.ACTIONABLE:
            failures.add(NOT_HELD, rid)
        elif not may_act(row["owner_team"]):
            failures.add(NOT_ALLOWED, rid)
        else:
            candidates.append(row)
    if not candidates:
        return 0

    now = timezone.now()
    reason = f"bulk #{bulk.pk}"
    if bulk.params.get("note"):
        reason += f": {bulk.params['note']}"
    if validating:
        applied = [apply_changes(r["current_payload"], changes) if changes else (r["current_payload"], {}, {})
                   for r in candidates]
        problems = validate_records(candidates, [a[0] for a in applied], ref)
        todo = []
        for row, (payload, before, after), probs in zip(candidates, applied, problems):
            if probs:
                failures.add(probs[0].reason, row["id"], " ".join(p.message for p in probs))
                continue
            todo.append((row, payload, before, after, _restart_stage(row, bool(after))))
        values = [(row["id"], row["version"], json.dumps(payload) if action == "fix" else None, stage)
                  for row, payload, _, _, stage in todo]
        updated = _conditional_update(values, payload=action == "fix", now=now)
        audits = [AuditEntry(actor=bulk.actor, record_id=row["id"], action=AUDIT_ACTIONS[action],
                             before={**before, "status": row["status"], "stage": row["stage"]},
                             after={**after, "status": SyncRecord.Status.PENDING, "stage": stage},
                             reason=f"{reason} (re-run from {stage})")
                  for row, _, before, after, stage in todo if row["id"] in updated]
        woken = {row["priority"] for row, *_ in todo if row["id"] in updated}
        for row, *_ in todo:
            if row["id"] not in updated:
                failures.add(CHANGED, row["id"])
        for p in sorted(woken):
            wake(f"records:{PRIORITY_QUEUE.get(p, 'default')}")
    elif action == "assign":
        values = [(r["id"], r["version"]) for r in candidates]
        updated = _conditional_update(values, assignee_id=bulk.params["assignee_id"], now=now)
        audits = [AuditEntry(actor=bulk.actor, record_id=r["id"], action=AUDIT_ACTIONS[action],
                             before={"assignee": r["assignee__username"]},
                             after={"assignee": bulk.params["assignee"]}, reason=reason)
                  for r in candidates if r["id"] in updated]
        for r in candidates:
            if r["id"] not in updated:
                failures.add(CHANGED, r["id"])
    elif action == "ignore":
        values = [(r["id"], r["version"]) for r in candidates]
        updated = _conditional_update(values, ignore=True, now=now)
        audits = [AuditEntry(actor=bulk.actor, record_id=r["id"], action=AUDIT_ACTIONS[action],
                             before={"status": r["status"]}, after={"status": SyncRecord.Status.IGNORED},
                             reason=f"bulk #{bulk.pk}: {bulk.params['reason']}")
                  for r in candidates if r["id"] in updated]
        for r in candidates:
            if r["id"] not in updated:
                failures.add(CHANGED, r["id"])
    else:
        raise BulkError(f"Unknown bulk action “{action}”.")
    AuditEntry.objects.bulk_create(audits, batch_size=RUN_CHUNK)
    return len(updated)


def _restart_stage(row: dict, changed: bool) -> str:
    """services.record_resubmit's rule: from the failed stage, or — when the fix changed fields and the record is
    past it — from the workflow's first_stage_on_restart, so the change reaches the canonical objects."""
    wf = get_workflow(row["workflow"])
    stage = row["stage"]
    names = wf.stage_names()
    if changed and wf.first_stage_on_restart and stage in names \
            and names.index(stage) > names.index(wf.first_stage_on_restart):
        stage = wf.first_stage_on_restart
    return stage


def _conditional_update(values: list[tuple], *, now, payload: bool = False, assignee_id: int | None = None,
                        ignore: bool = False) -> set[int]:
    """One UPDATE … FROM (VALUES …) for a chunk: each row changes only if still held/dead and still at the version
    the preview saw. values: (id, version) for assign/ignore, (id, version, payload json | None, stage) for
    resubmit/fix. Returns the ids changed."""
    if not values:
        return set()
    qn = connection.ops.quote_name
    table = qn(SyncRecord._meta.db_table)
    col = {f.name: qn(f.column) for f in SyncRecord._meta.concrete_fields}
    params: list = []
    if len(values[0]) == 4:
        rows_sql = ", ".join(["(%s::bigint, %s::integer, %s::jsonb, %s::varchar)"] * len(values))
        columns = "(id, version, payload, stage)"
        sets = [f"{col['status']} = %s", f"{col['stage']} = v.stage", f"{col['attempts']} = 0",
                f"{col['next_attempt_at']} = %s", f"{col['reason_code']} = ''", f"{col['message']} = ''",
                f"{col['fault_fields']} = '{{}}'", f"{col['failed_system']} = ''", f"{col['system_message']} = ''",
                f"{col['error_signature']} = ''"]  # held_at stays: resolution time is measured from it
        set_params = [SyncRecord.Status.PENDING.value, now]
        if payload:
            sets.append(f"{col['current_payload']} = v.payload")
    else:
        rows_sql = ", ".join(["(%s::bigint, %s::integer)"] * len(values))
        columns = "(id, version)"
        if assignee_id is not None:
            sets, set_params = [f"{col['assignee']} = %s"], [assignee_id]
        elif ignore:
            sets = [f"{col['status']} = %s", f"{col['completed_at']} = %s"]
            set_params = [SyncRecord.Status.IGNORED.value, now]
        else:
            raise ValueError("nothing to update")
    sets += [f"{col['version']} = r.{col['version']} + 1", f"{col['updated_at']} = %s"]
    set_params.append(now)
    params.extend(set_params)
    for v in values:
        params.extend(v)
    held = [s.value for s in SyncRecord.ACTIONABLE]
    params.extend(held)
    sql = (f"UPDATE {table} AS r SET {', '.join(sets)} FROM (VALUES {rows_sql}) AS v {columns} "
           f"WHERE r.{col['id']} = v.id AND r.{col['version']} = v.version "
           f"AND r.{col['status']} IN ({', '.join(['%s'] * len(held))}) RETURNING r.{col['id']}")
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return {row[0] for row in cur.fetchall()}
