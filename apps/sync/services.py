"""Human actions on sync records: fix, dry-run, resubmit, ignore. Each is audited and version-checked."""

from __future__ import annotations

import copy

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from .desk import check_can_act
from .errors import Conflict, NotActionable, NotAllowed, StillInvalid
from .models import AuditEntry, SyncRecord
from .payload import get_path, normalise_fix, set_path
from .record_states import ignored_fields, needs_validation, reset_fields, restart_stage
from .wakeup import PRIORITY_QUEUE, wake
from .workflows.catalog import get_workflow


def apply_changes(payload: dict, changes: dict) -> tuple[dict, dict, dict]:
    """New payload with `changes` (canonical field path → value), plus before/after of what really changed."""
    new = copy.deepcopy(payload)
    before, after = {}, {}
    for path, value in changes.items():
        value = normalise_fix(path, value)
        old = get_path(new, path)
        if (old or "") != (value or ""):
            before[path], after[path] = old, value
            set_path(new, path, value)
    return new, before, after


def record_dry_run(*, record: SyncRecord, changes: dict) -> dict:
    """What resubmitting with these changes would do: the problems left, and what goes to which system."""
    wf = get_workflow(record.workflow)
    payload, before, after = apply_changes(record.current_payload, changes)
    problems = wf.validate(payload, source_kind=record.source_connection.kind)
    plan = []
    for stage in wf.stages:
        if stage.system_role:
            plan.append({"stage": stage.label, "role": stage.system_role.upper(),
                         "done": stage.name in _done_stages(record, wf)})
    return {"payload": payload, "before": before, "after": after, "problems": problems, "plan": plan}


def _done_stages(record: SyncRecord, wf) -> set[str]:
    names = wf.stage_names()
    return set(names[: names.index(record.stage)]) if record.stage in names else set()


def record_resubmit(*, record_id: int, actor, expected_version: int, changes: dict | None = None,
                    from_start: bool = False, reason: str = "", replace_payload: dict | None = None) -> SyncRecord:
    """Apply the fix, check it with the workflow's rules, and send the record back to the workers.

    From the failed stage by default; from the start on request. Both are safe: every downstream write is
    idempotent, so re-running a stage that already succeeded cannot create a second customer or project.
    """
    record = SyncRecord.objects.select_related("source_connection").get(pk=record_id)
    check_can_act(actor, record)
    wf = get_workflow(record.workflow)
    if replace_payload is not None:
        old, new = _flatten(record.current_payload), _flatten(replace_payload)
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        payload, before, after = copy.deepcopy(replace_payload), {k: old.get(k) for k in keys}, \
            {k: new.get(k) for k in keys}
    else:
        payload, before, after = apply_changes(record.current_payload, changes or {})
    fetched = bool(record.context.get("fetched"))
    if needs_validation(record.stage, fetched):
        problems = wf.validate(payload, source_kind=record.source_connection.kind)
        if problems:
            raise StillInvalid(problems)
    stage = restart_stage(wf, stage=record.stage, changed=bool(after), from_start=from_start, fetched=fetched)
    now = timezone.now()
    with transaction.atomic():
        n = (SyncRecord.objects
             .filter(pk=record.pk, version=expected_version, status__in=SyncRecord.ACTIONABLE)
             .update(current_payload=payload, **reset_fields(stage=stage, now=now), version=F("version") + 1,
                     updated_at=now))
        if n == 0:
            current = SyncRecord.objects.get(pk=record.pk)
            if current.version != expected_version:
                raise Conflict(f"This record was changed by someone else (version {current.version}, you had "
                               f"{expected_version}). Reload to see their change.")
            raise NotActionable(f"This record is {current.get_status_display().lower()}, not held.")
        AuditEntry.objects.create(actor=actor, record=record, action="resubmit", before=before, after=after,
                                  reason=reason or ("re-run from the start" if from_start else f"re-run from {stage}"))
        wake(f"records:{PRIORITY_QUEUE[record.priority]}")
    record.refresh_from_db()
    return record


def record_ignore(*, record_id: int, actor, expected_version: int, reason: str) -> SyncRecord:
    if not reason.strip():
        raise ValueError("A reason is required to resolve a record without resubmitting it.")
    check_can_act(actor, SyncRecord.objects.get(pk=record_id))
    now = timezone.now()
    with transaction.atomic():
        n = (SyncRecord.objects.filter(pk=record_id, version=expected_version, status__in=SyncRecord.ACTIONABLE)
             .update(**ignored_fields(now=now), version=F("version") + 1, updated_at=now))
        if n == 0:
            raise Conflict("This record was changed by someone else, or is no longer held. Reload it.")
        AuditEntry.objects.create(actor=actor, record_id=record_id, action="ignore", reason=reason.strip())
    return SyncRecord.objects.get(pk=record_id)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def record_resubmit_raw(*, record_id: int, actor, expected_version: int, payload: dict,
                        reason: str = "") -> SyncRecord:
    """Integration admins only: replace the whole current payload (raw JSON), then resubmit like a fix."""
    if not actor.has_perm("sync.view_raw_payload"):
        raise NotAllowed("Only integration admins may edit raw payloads.")
    if not isinstance(payload, dict):
        raise ValueError("The payload must be a JSON object.")
    return record_resubmit(record_id=record_id, actor=actor, expected_version=expected_version,
                           replace_payload=payload, reason=reason or "raw payload edited")
