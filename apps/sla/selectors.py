"""Read-only SLA figures for boards (one query each, over open records)."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from apps.sync.models import SyncRecord

from .services import BREACHED, OPEN_STATUSES, STATES


def _open(queryset: QuerySet | None = None) -> QuerySet:
    qs = SyncRecord.objects.all() if queryset is None else queryset
    return qs.filter(status__in=OPEN_STATUSES).order_by()


def breaches_by_workflow_stage(queryset: QuerySet | None = None) -> dict[tuple[str, str], int]:
    """{(workflow, stage): number of open records whose SLA is breached}; only non-zero pairs."""
    rows = (_open(queryset).filter(sla_state=BREACHED).values_list("workflow", "stage")
            .annotate(n=Count("id")))
    return {(wf, stage): n for wf, stage, n in rows}


def sla_counts(queryset: QuerySet | None = None) -> dict[str, int]:
    """{"ok": n, "due_soon": n, "breached": n} over open records (every key present)."""
    out = dict.fromkeys(STATES, 0)
    for state, n in _open(queryset).values_list("sla_state").annotate(n=Count("id")):
        out[state if state in out else "ok"] += n
    return out
