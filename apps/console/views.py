"""The console's screens. One view per screen; an htmx request gets only the named partial."""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import HttpResponseForbidden
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from apps.sync import services
from apps.sync.models import InboundEvent, SyncRecord, SyncRun
from apps.sync.workflows.base import all_workflows, get_workflow
from apps.sync.workflows.quote_to_project import get_path

from .forms import FixForm

STATUS_COLUMNS = ["pending", "in_progress", "retrying", "held", "succeeded", "ignored", "dead"]


def htmx_partial(request) -> bool:
    return bool(request.htmx) and not request.htmx.boosted


def home(request):
    """Home board: records per workflow and status, held records per reason, recent callbacks and runs."""
    counts = {}
    for row in SyncRecord.objects.values("workflow", "status").annotate(n=Count("id")):
        counts.setdefault(row["workflow"], {})[row["status"]] = row["n"]
    board = []
    for wf in all_workflows():
        c = counts.get(wf.name, {})
        board.append({"workflow": wf, "cells": [c.get(s, 0) for s in STATUS_COLUMNS], "total": sum(c.values())})
    reasons = (SyncRecord.objects.filter(status__in=SyncRecord.ACTIONABLE).values("reason_code", "owner_team")
               .annotate(n=Count("id")).order_by("-n"))
    since = timezone.now() - timezone.timedelta(hours=24)
    events = dict(InboundEvent.objects.filter(received_at__gte=since).values_list("status")
                  .annotate(n=Count("id")).values_list("status", "n"))
    context = {
        "board": board, "columns": STATUS_COLUMNS, "reasons": reasons, "events": events,
        "column_labels": [SyncRecord.Status(s).label for s in STATUS_COLUMNS],
        "runs": SyncRun.objects.order_by("-created_at")[:8], "now": timezone.now(),
        "my_team_held": SyncRecord.objects.filter(status__in=SyncRecord.ACTIONABLE,
                                                  owner_team__in=_user_teams(request.user)).count(),
    }
    template = "console/home.html#board" if htmx_partial(request) else "console/home.html"
    return render(request, template, context)


def _user_teams(user) -> list[str]:
    names = set(user.groups.values_list("name", flat=True))
    return [t for t in ("pmo", "finance_ops", "integration_admin") if t in names]


def exceptions(request):
    """Held records (and dead letters), filterable; the filter lives in the URL."""
    qs = SyncRecord.objects.filter(status__in=SyncRecord.ACTIONABLE).select_related("source_connection")
    f = {k: request.GET.get(k, "") for k in ("workflow", "reason", "team", "q")}
    if f["workflow"]:
        qs = qs.filter(workflow=f["workflow"])
    if f["reason"]:
        qs = qs.filter(reason_code=f["reason"])
    if f["team"]:
        qs = qs.filter(owner_team=f["team"])
    if f["q"]:
        qs = qs.filter(Q(title__icontains=f["q"]) | Q(source_key__icontains=f["q"]) | Q(message__icontains=f["q"]))
    page = Paginator(qs.order_by("priority", "held_at", "id"), 50).get_page(request.GET.get("page"))
    reasons = (SyncRecord.objects.filter(status__in=SyncRecord.ACTIONABLE).values_list("reason_code", flat=True)
               .distinct().order_by("reason_code"))
    context = {"page": page, "f": f, "reasons": reasons, "workflows": all_workflows(),
               "teams": SyncRecord.Team.choices, "querystring": request.GET.urlencode()}
    template = "console/exceptions.html#rows" if htmx_partial(request) else "console/exceptions.html"
    return render(request, template, context)


def _record_context(request, record: SyncRecord, form: FixForm | None = None, dry_run=None):
    wf = get_workflow(record.workflow)
    form = form or FixForm(record=record, fix_fields=wf.fix_fields, initial={"version": record.version})
    names = wf.stage_names()
    reached = names.index(record.stage) if record.stage in names else 0
    stages = [{"name": s.name, "label": s.label, "state": ("done" if i < reached or record.status == "succeeded"
                                                             else "current" if i == reached else "todo")}
              for i, s in enumerate(wf.stages)]
    can_raw = request.user.has_perm("sync.view_raw_payload")
    return {
        "record": record, "wf": wf, "form": form, "stages": stages, "dry_run": dry_run,
        "attempts": record.attempt_set.order_by("-started_at", "-id")[:100],
        "audit": record.audit.select_related("actor").order_by("-at"),
        "events": record.events.order_by("received_at"),
        "can_fix": request.user.has_perm("sync.resubmit_syncrecord") and record.status in SyncRecord.ACTIONABLE,
        "can_raw": can_raw,
        "original_json": json.dumps(record.original_payload, indent=2, sort_keys=True) if can_raw else "",
        "current_json": json.dumps(record.current_payload, indent=2, sort_keys=True) if can_raw else "",
        "diff": _diff(record.original_payload, record.current_payload, wf.fix_fields),
    }


def _diff(original: dict, current: dict, paths: list[str]) -> list[dict]:
    out = []
    for p in paths:
        a, b = get_path(original, p), get_path(current, p)
        if (a or "") != (b or ""):
            out.append({"field": p, "original": a, "current": b})
    return out


def record_detail(request, pk: int):
    record = get_object_or_404(SyncRecord.objects.select_related("source_connection"), pk=pk)
    template = "console/record.html#status" if htmx_partial(request) else "console/record.html"
    return render(request, template, _record_context(request, record))


@require_POST
@permission_required("sync.resubmit_syncrecord", raise_exception=True)
def record_action(request, pk: int):
    """dry_run → the partial with what would happen; resubmit → back to the record page; ignore likewise."""
    record = get_object_or_404(SyncRecord.objects.select_related("source_connection"), pk=pk)
    wf = get_workflow(record.workflow)
    action = request.POST.get("action", "dry_run")
    form = FixForm(request.POST, record=record, fix_fields=wf.fix_fields)
    if not form.is_valid():
        return render(request, "console/record.html", _record_context(request, record, form), status=400)
    version = form.cleaned_data["version"]
    if action == "dry_run":
        result = services.record_dry_run(record=record, changes=form.changes())
        return render(request, "console/record.html#dryrun", {**_record_context(request, record, form, result)})
    try:
        if action == "ignore":
            services.record_ignore(record_id=record.pk, actor=request.user, expected_version=version,
                                   reason=form.cleaned_data["reason"])
            messages.success(request, "Resolved without resubmitting.")
        else:
            services.record_resubmit(record_id=record.pk, actor=request.user, expected_version=version,
                                     changes=form.changes(), from_start=form.cleaned_data["from_start"],
                                     reason=form.cleaned_data["reason"])
            messages.success(request, "Resubmitted: the workers have it now.")
    except services.StillInvalid as exc:
        result = {"problems": exc.problems, "plan": [], "before": {}, "after": {}}
        messages.error(request, "Not resubmitted: the fix does not pass the workflow's rules yet.")
        ctx = _record_context(request, record, form, result)
        return render(request, "console/record.html", ctx, status=422)
    except services.NotAllowed as exc:
        return HttpResponseForbidden(str(exc))
    except (services.Conflict, services.NotActionable, ValueError) as exc:
        messages.error(request, str(exc))
    if request.htmx:
        return HttpResponseClientRedirect(request.path.rsplit("action/", 1)[0])
    return redirect("console:record", pk=record.pk)


def runs(request):
    page = Paginator(SyncRun.objects.order_by("-created_at"), 50).get_page(request.GET.get("page"))
    return render(request, "console/runs.html", {"page": page})


def events(request):
    qs = InboundEvent.objects.order_by("-received_at", "-id")
    if status := request.GET.get("status"):
        qs = qs.filter(status=status)
    page = Paginator(qs, 50).get_page(request.GET.get("page"))
    return render(request, "console/events.html", {"page": page, "status": status or ""})
