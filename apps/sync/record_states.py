"""What a record's columns are when it is held, sent back to the workers, or through — the one definition the
engine, the desk's actions, the bulk actions (rendered as SQL), the inbox and the reconciliation runs all write.

Each function returns the fields to write; the caller writes them its own way (a leased UPDATE, a versioned
UPDATE, one UPDATE … FROM VALUES per chunk, bulk_update), so a change to a state is made here once."""

from __future__ import annotations

from django.db import connection

from .models import SyncRecord
from .queue_columns import error_signature, summary_fields
from .workflows.base import Problem, Workflow

# the explanation of an exception: emptied whenever a record goes back to work or goes through
CLEAR_REASON = {"reason_code": "", "message": "", "fault_fields": [], "failed_system": "", "system_message": "",
                "error_signature": ""}


def held_fields(wf: Workflow, problems: list[Problem], *, record: SyncRecord, stage: str, payload: dict,
                context: dict, held_at, original: dict | None = None, target_system: str | None = None) -> dict:
    """A record held at `stage` for a person: the first problem names the reason, the system and the owner team;
    every problem's message and fields are kept; the derived queue columns follow the payload.

    target_system: the system the exception is about; by default the one that refused, else the one the stage
    calls. held_at: when the record was first held (a refresh of a held record keeps it: resolution time is
    measured from it)."""
    first = problems[0]
    message = " ".join(p.message for p in problems)
    if target_system is None:
        target_system = first.system if first.system not in ("", "handoff") else wf.stage(stage).system_role
    return {
        "stage": stage, "status": SyncRecord.Status.HELD, "reason_code": first.reason, "message": message[:4000],
        "fault_fields": sorted({f for p in problems for f in p.fields}), "failed_system": first.system,
        "system_message": first.system_message[:4000], "owner_team": wf.owner_team(first.reason),
        "error_signature": error_signature(first.reason, first.system, first.message),
        "target_system": target_system, "held_at": held_at, "completed_at": None, "attempts": 0,
        "next_attempt_at": None, "lease_token": None, "lease_expires_at": None,
        "context": context, "current_payload": payload,
        **({"original_payload": original} if original is not None else {}),
        **summary_fields(record, payload, context),
    }


def reset_fields(*, stage: str, now) -> dict:
    """A record sent back to the workers from `stage`: due now, its attempts counted afresh, the explanation
    cleared. held_at stays: resolution time is measured from it."""
    return {"stage": stage, "status": SyncRecord.Status.PENDING, "attempts": 0, "next_attempt_at": now,
            "completed_at": None, **CLEAR_REASON}


def needs_validation(stage: str, fetched: bool) -> bool:
    """A record still waiting to fetch its source object (HubSpot's webhook carries only ids) has nothing to
    validate yet: a resubmit sends it back to fetch."""
    return stage != "fetch" or fetched


def restart_stage(wf: Workflow, *, stage: str, changed: bool, from_start: bool = False, fetched: bool = False) -> str:
    """The stage a resubmitted record runs from: the failed stage by default; when the fix changed fields and the
    record is past the workflow's first_stage_on_restart, that stage, so the change reaches the canonical objects
    first; on request, from the start (after fetch, unless the record never fetched). Re-running stages that
    already succeeded is safe: every downstream write is idempotent."""
    first = wf.first_stage_on_restart or wf.stages[0].name
    if from_start:
        return first if fetched or stage != "fetch" else wf.stages[0].name
    names = wf.stage_names()
    if changed and wf.first_stage_on_restart and stage in names and names.index(stage) > names.index(first):
        return first
    return stage


def ignored_fields(*, now) -> dict:
    """A record a person resolved without resubmitting it."""
    return {"status": SyncRecord.Status.IGNORED, "completed_at": now}


def succeeded_fields(*, now) -> dict:
    """A record that went through (or whose exception went away): no lease, nothing due, nothing to explain."""
    return {"status": SyncRecord.Status.SUCCEEDED, "completed_at": now, "next_attempt_at": None,
            "lease_token": None, "lease_expires_at": None, **CLEAR_REASON}


def sql_assignments(fields: dict) -> tuple[list[str], list]:
    """`"column" = %s` for each field, with its value prepared by the model field as the ORM's update() would,
    for statements the ORM cannot express (a lease-guarded UPDATE, an UPDATE … FROM VALUES)."""
    opts = SyncRecord._meta
    sets, params = [], []
    for name, value in fields.items():
        field = opts.get_field(name)
        if field.is_relation and hasattr(value, "pk"):
            value = value.pk
        sets.append(f'"{field.column}" = %s')
        params.append(field.get_db_prep_save(value, connection))
    return sets, params
