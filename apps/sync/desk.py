"""The exception desk's rules: who may act on a record, and the small human actions (claim, assign, comment,
priority override). Every action is audited and version-checked like resubmit (services.py). The queue's derived
columns (priority, error signature, search keys) are in queue_columns.py."""

from __future__ import annotations

from typing import Callable

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from .errors import Conflict, NotAllowed
from .models import AuditEntry, SyncRecord

TEAM_GROUPS = {"pmo", "finance_ops", "integration_admin"}


# ---------------------------------------------------------------- who may act


def user_teams(user) -> set[str]:
    if not user or not user.is_authenticated:
        return set()
    cached = getattr(user, "_handoff_teams", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True)) & TEAM_GROUPS
        user._handoff_teams = cached
    return cached


def actor_scope(user) -> Callable[[str], bool]:
    """owner_team → may the user act on a record of that team: integration admins on every record, PMO and
    finance ops on their own team's records, viewers on none. Decided once, for one record or many."""
    if not user or not user.has_perm("sync.resubmit_syncrecord"):
        return lambda team: False
    teams = user_teams(user)
    if user.is_superuser or "integration_admin" in teams:
        return lambda team: True
    return lambda team: team in teams


def assign_scope(actor, assignee) -> Callable[[str], bool]:
    """owner_team → may the actor give a record of that team to the assignee: both must be able to act on it,
    or the record would sit with someone who cannot work it. One rule for single and bulk assignment."""
    actor_may, assignee_may = actor_scope(actor), actor_scope(assignee)
    return lambda team: actor_may(team) and assignee_may(team)


def can_act(user, record: SyncRecord) -> bool:
    return actor_scope(user)(record.owner_team)


def can_comment(user) -> bool:
    """Commenting is acting on the record (the trail is the desk's conversation): the roles that act, on any
    team's record; viewers only read."""
    return user.has_perm("sync.resubmit_syncrecord")


def check_can_act(user, record: SyncRecord) -> None:
    if not can_act(user, record):
        team = record.get_owner_team_display()
        raise NotAllowed(f"This record belongs to {team}; your role cannot act on it.")


# ---------------------------------------------------------------- small actions


def _audited_update(*, record: SyncRecord, actor, expected_version: int | None, action: str, fields: dict,
                    before: dict, after: dict, reason: str = "", require_team: bool = True) -> SyncRecord:
    if require_team:
        check_can_act(actor, record)
    qs = SyncRecord.objects.filter(pk=record.pk)
    if expected_version is not None:
        qs = qs.filter(version=expected_version)
    with transaction.atomic():
        n = qs.update(version=F("version") + 1, updated_at=timezone.now(), **fields)
        if n == 0:
            raise Conflict("This record was changed by someone else since you opened it. Reload to see the change.")
        AuditEntry.objects.create(actor=actor, record=record, action=action, before=before, after=after,
                                  reason=reason)
    record.refresh_from_db()
    return record


def record_assign(*, record: SyncRecord, actor, assignee, expected_version: int | None = None) -> SyncRecord:
    """Claim (assignee = actor), assign to someone, or unassign (assignee None)."""
    before = {"assignee": record.assignee.username if record.assignee else None}
    after = {"assignee": assignee.username if assignee else None}
    action = "claim" if assignee == actor else ("unassign" if assignee is None else "assign")
    if assignee is not None and not assign_scope(actor, assignee)(record.owner_team):
        check_can_act(actor, record)
        raise NotAllowed(f"{assignee.get_username()} cannot act on {record.get_owner_team_display()} records; "
                         f"assign it to someone who can.")
    return _audited_update(record=record, actor=actor, expected_version=expected_version, action=action,
                           fields={"assignee": assignee}, before=before, after=after)


def record_comment(*, record: SyncRecord, actor, text: str) -> AuditEntry:
    text = (text or "").strip()
    if not text:
        raise ValueError("A comment cannot be empty.")
    if not can_comment(actor):
        raise NotAllowed("Your role cannot comment on records.")
    return AuditEntry.objects.create(actor=actor, record=record, action="comment", reason=text[:4000])


def record_set_priority(*, record: SyncRecord, actor, priority: int, reason: str,
                        expected_version: int | None = None) -> SyncRecord:
    if priority not in (1, 2, 3):
        raise ValueError("Priority is 1, 2 or 3.")
    if not (reason or "").strip():
        raise ValueError("Say why the priority is overridden.")
    return _audited_update(
        record=record, actor=actor, expected_version=expected_version, action="priority",
        fields={"priority": priority, "priority_overridden": True,
                "priority_reason": f"P{priority}: set by {actor.get_username()} — {reason.strip()}"[:200]},
        before={"priority": record.priority}, after={"priority": priority}, reason=reason.strip())
