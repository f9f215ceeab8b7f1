"""The exception desk's rules: who may act on a record, business priority, error signatures, search keys, and
the small human actions (claim, assign, comment, priority override). Every action is audited and
version-checked like resubmit (services.py)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from decimal import Decimal

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from .models import AuditEntry, SyncRecord

TEAM_GROUPS = {"pmo", "finance_ops", "integration_admin"}


class NotAllowed(Exception):
    """The user's role does not let them act on this record."""


# ---------------------------------------------------------------- who may act


def user_teams(user) -> set[str]:
    if not user or not user.is_authenticated:
        return set()
    cached = getattr(user, "_handoff_teams", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True)) & TEAM_GROUPS
        user._handoff_teams = cached
    return cached


def team_scope(user) -> Callable[[str], bool]:
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
    actor_may, assignee_may = team_scope(actor), team_scope(assignee)
    return lambda team: actor_may(team) and assignee_may(team)


def can_act(user, record: SyncRecord) -> bool:
    return team_scope(user)(record.owner_team)


def can_comment(user) -> bool:
    """Commenting is acting on the record (the trail is the desk's conversation): the roles that act, on any
    team's record; viewers only read."""
    return user.has_perm("sync.resubmit_syncrecord")


def check_can_act(user, record: SyncRecord) -> None:
    if not can_act(user, record):
        team = record.get_owner_team_display()
        raise NotAllowed(f"This record belongs to {team}; your role cannot act on it.")


# ---------------------------------------------------------------- priority, signature, search keys


def money(amount, currency) -> str:
    if amount in (None, ""):
        return ""
    try:
        return f"{Decimal(str(amount)):,.2f} {currency or ''}".strip()
    except Exception:
        return f"{amount} {currency or ''}".strip()


MONEY_WORKFLOWS = {"time_to_billing", "milestone_to_invoice", "invoice_payment_to_crm", "reconciliation"}
REFERENCE_WORKFLOWS = {"reference_data"}


def business_priority(*, workflow: str, amount, currency: str, title: str = "") -> tuple[int, str]:
    """Priority from impact, with its explanation: money postings P1, set-up P2, reference data P3."""
    what = title or workflow.replace("_", " ")
    if workflow in MONEY_WORKFLOWS:
        return 1, f"P1: {workflow.replace('_', ' ')} of {money(amount, currency) or 'unknown amount'} blocked"
    if workflow in REFERENCE_WORKFLOWS:
        return 3, f"P3: reference data ({what})"
    if workflow == "quote_to_project":
        deal = money(amount, currency)
        return 2, f"P2: project set-up blocked for a won deal{' of ' + deal if deal else ''}"
    return 2, f"P2: {what}"


_NORMALISE = [
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I), "<id>"),
    (re.compile(r"“[^”]*”|\"[^\"]*\"|'[^']*'"), "<value>"),
    (re.compile(r"#?\d[\d.,:-]*"), "<n>"),
    (re.compile(r"\s+"), " "),
]


def normalise_message(message: str) -> str:
    """The message with values taken out, so that alike exceptions read the same."""
    text = (message or "").strip()
    for pattern, repl in _NORMALISE:
        text = pattern.sub(repl, text)
    return text[:300]


def error_signature(reason: str, system: str, message: str) -> str:
    basis = f"{reason}|{system}|{normalise_message(message)}"
    return hashlib.sha1(basis.encode()).hexdigest()[:16]


def search_keys(record_or_fields) -> list[str]:
    """Every id a person might paste into the search box, upper-cased for exact, case-free matching."""
    get = record_or_fields.get if isinstance(record_or_fields, dict) else lambda k, d=None: getattr(
        record_or_fields, k, d)
    payload = get("current_payload") or {}
    context = get("context") or {}
    account = payload.get("account") or {}
    keys = {get("source_key") or "", str(get("correlation_id") or "")}
    keys.add((get("source_key") or "").split(":", 1)[-1])
    for v in (payload.get("opportunity_id"), payload.get("deal_id"), account.get("id"), account.get("tax_id"),
              account.get("name"), payload.get("invoice_number"), payload.get("engagement_code")):
        if v:
            keys.add(str(v))
    for k, v in context.items():
        if k.endswith("_id") or k.endswith("_code") or k.endswith("_number"):
            if v not in (None, ""):
                keys.add(str(v))
    return sorted({k.strip().upper()[:200] for k in keys if k and k.strip()})


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
            from .services import Conflict

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
