"""The console's screens. One view per screen; an htmx request gets only the named partial."""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import HttpResponseBadRequest, HttpResponseForbidden
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from apps.core.inputs import param_choice, param_int, param_page
from apps.sync import desk, services
from apps.sync.selectors import backlog
from apps.sync.models import Connection, InboundEvent, SyncRecord, SyncRun
from apps.sync.workflows.catalog import all_workflows, get_workflow
from apps.sync.payload import get_path

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
        "backlog": backlog(),
        "my_team_held": SyncRecord.objects.filter(status__in=SyncRecord.ACTIONABLE,
                                                  owner_team__in=desk.user_teams(request.user)).count(),
    }
    template = "console/home.html#board" if htmx_partial(request) else "console/home.html"
    return render(request, template, context)


def exceptions(request):
    """The exception queue: held records (and dead letters), filters that compose and live in the URL, facet
    counts, sortable, paginated; `?view=groups` groups them by error signature."""
    from . import queue

    params = request.GET.dict()
    qs = queue.held_queryset(params, request.user)
    sort = param_choice(params, "sort", queue.SORTS, "priority")
    view = "groups" if params.get("view") == "groups" else "rows"
    grouped: list[dict] = []
    if view == "groups":  # the facets and the groups in one pass over the rows
        facets, grouped = queue.facets_and_groups(qs)
    else:
        facets = queue.facet_counts(qs)
    total = sum(n for _, n in facets["priority"])  # the facets already counted the rows: no COUNT(*) again
    # paginate ids (an index-only scan, cheap even on a deep page), then load just the page's rows
    paginator = queue.CountedPaginator(qs.order_by(*queue.SORTS[sort][0]).values_list("id", flat=True), 50,
                                       count=total)
    page = paginator.get_page(param_page(request.GET))
    rows = []
    if view == "rows":  # the grouped view shows groups, not rows
        by_id = SyncRecord.objects.select_related("source_connection", "assignee").in_bulk(list(page.object_list))
        rows = [by_id[i] for i in page.object_list if i in by_id]
    base = request.GET.copy()
    for k in ("page", "sort", "view"):
        base.pop(k, None)
    context = {
        "page": page, "rows": rows, "f": {k: params.get(k, "") for k in queue.FILTER_KEYS}, "sort": sort,
        "sorts": queue.SORTS,
        "view": view, "team": queue.effective_team(params, request.user),
        "facets": facets, "workflows": all_workflows(), "teams": SyncRecord.Team.choices,
        "groups": grouped,
        "querystring": request.GET.urlencode(), "filter_qs": base.urlencode(), "ages": list(queue.AGES),
        "targets": queue.TARGETS,
        "sources": Connection.objects.filter(role="crm").values_list("slug", flat=True),
        "can_bulk": request.user.has_perm("sync.resubmit_syncrecord"),
    }
    template = "console/exceptions.html#results" if htmx_partial(request) else "console/exceptions.html"
    return render(request, template, context)


def search(request):
    """One box, any id: opportunity, account, tax id, any external id, correlation id, or part of a name."""
    from . import queue

    q = request.GET.get("q", "").strip()
    results = queue.global_search(q, user=request.user)
    if len(results) == 1 and request.GET.get("go"):
        return redirect("console:record", pk=results[0].pk)
    return render(request, "console/search.html", {"q": q, "results": results})


def _record_context(request, record: SyncRecord, form: FixForm | None = None, dry_run=None):
    wf = get_workflow(record.workflow)
    form = form or FixForm(record=record, fix_fields=wf.fix_fields, initial={"version": record.version})
    names = wf.stage_names()
    reached = names.index(record.stage) if record.stage in names else 0
    stages = [{"name": s.name, "label": s.label, "state": ("done" if i < reached or record.status == "succeeded"
                                                             else "current" if i == reached else "todo")}
              for i, s in enumerate(wf.stages)]
    can_raw = request.user.has_perm("sync.view_raw_payload")
    attempts = list(record.attempt_set.order_by("-started_at", "-id")[:100])
    audit = list(record.audit.select_related("actor").order_by("-at"))
    events = list(record.events.order_by("received_at"))
    timeline = sorted(
        [{"at": e.received_at, "kind": "callback", "obj": e} for e in events]
        + [{"at": a.started_at, "kind": "attempt", "obj": a} for a in attempts]
        + [{"at": a.at, "kind": "human", "obj": a} for a in audit],
        key=lambda t: t["at"], reverse=True)
    can_act = desk.can_act(request.user, record)
    return {
        "record": record, "wf": wf, "form": form, "stages": stages, "dry_run": dry_run,
        "attempts": attempts, "audit": audit, "events": events, "timeline": timeline,
        "trace": _trace(record),
        "sla_clocks": _sla_clocks(record),
        "can_act": can_act,
        "can_comment": desk.can_comment(request.user),
        "team_users": _team_users(record) if can_act else [],
        "can_fix": can_act and record.status in SyncRecord.ACTIONABLE,
        "can_raw": can_raw,
        "original_json": json.dumps(record.original_payload, indent=2, sort_keys=True, ensure_ascii=False) if can_raw else "",
        "current_json": json.dumps(record.current_payload, indent=2, sort_keys=True, ensure_ascii=False) if can_raw else "",
        "diff": _diff(record.original_payload, record.current_payload, wf.fix_fields),
    }


def _trace(record: SyncRecord) -> dict:
    """The correlation trace: every record of the same business thread (opportunity → customer → engagement →
    milestones/time → invoices → payment), and the ids the thread got in each system."""
    from apps.canonical.models import Customer, Engagement, ExternalId

    related = list(SyncRecord.objects.filter(correlation_id=record.correlation_id).exclude(pk=record.pk)
                   .only("id", "workflow", "stage", "status", "title", "created_at", "original_payload",
                         "current_payload").order_by("created_at"))  # the payloads: to mask personal data
    ids = []
    engagement = Engagement.objects.filter(correlation_id=record.correlation_id).select_related("customer").first()
    if engagement:
        from django.contrib.contenttypes.models import ContentType

        ct_e, ct_c = ContentType.objects.get_for_model(Engagement), ContentType.objects.get_for_model(Customer)
        ids = list(ExternalId.objects.filter(Q(content_type=ct_e, object_id=engagement.pk)
                                             | Q(content_type=ct_c, object_id=engagement.customer_id))
                   .order_by("system", "object_type"))
    return {"related": related, "engagement": engagement, "external_ids": ids}


def _sla_clocks(record: SyncRecord):
    """The SLA clocks running for this record (flow and exception), for the record page."""
    from apps.sla.services import assess_record

    if record.status not in ("pending", "in_progress", "retrying", "held", "dead"):
        return []
    return assess_record(record)


def _team_users(record: SyncRecord):
    from django.contrib.auth.models import User

    return list(User.objects.filter(is_active=True, groups__name__in=[record.owner_team, "integration_admin"])
                .distinct().order_by("username").only("id", "username", "first_name", "last_name")[:100])


def _diff(original: dict, current: dict, paths: list[str]) -> list[dict]:
    out = []
    for p in paths:
        a, b = get_path(original, p), get_path(current, p)
        if (a or "") != (b or ""):
            out.append({"field": p, "original": a, "current": b})
    return out


def record_detail(request, pk: int):
    record = get_object_or_404(SyncRecord.objects.select_related("source_connection", "assignee"), pk=pk)
    template = "console/record.html#status" if htmx_partial(request) else "console/record.html"
    return render(request, template, _record_context(request, record))


def record_freshness(request, pk: int):
    """Polled by an open record page: has someone else changed the record since it was loaded (?v=)?"""
    record = get_object_or_404(SyncRecord.objects.select_related("assignee"), pk=pk)
    loaded = param_int(request.GET, "v", 0)
    last = record.audit.select_related("actor").order_by("-at").first() if record.version != loaded else None
    return render(request, "console/record.html#freshness", {"record": record, "loaded_version": loaded,
                                                              "stale": record.version != loaded, "last": last})


@require_POST
def record_desk_action(request, pk: int):
    """Claim / assign / unassign, comment, priority override. Server-side permission and version checks."""
    record = get_object_or_404(SyncRecord, pk=pk)
    action = request.POST.get("action", "")
    version = param_int(request.POST, "version")
    try:
        if action == "comment":
            desk.record_comment(record=record, actor=request.user, text=request.POST.get("text", ""))
            messages.success(request, "Comment added.")
        elif action in ("claim", "assign", "unassign"):
            from django.contrib.auth.models import User

            assignee = {"claim": request.user, "unassign": None}.get(action)
            if action == "assign":
                assignee = get_object_or_404(User, username=request.POST.get("assignee", ""))
            desk.record_assign(record=record, actor=request.user, assignee=assignee, expected_version=version)
            messages.success(request, {"claim": "You own this record now.", "unassign": "Unassigned."}.get(
                action, f"Assigned to {assignee.get_username() if assignee else ''}."))
        elif action == "priority":
            desk.record_set_priority(record=record, actor=request.user, priority=param_int(request.POST, "priority", 0),
                                     reason=request.POST.get("reason", ""), expected_version=version)
            messages.success(request, "Priority changed.")
        else:
            return HttpResponseBadRequest("unknown action")
    except desk.NotAllowed as exc:
        return HttpResponseForbidden(str(exc))
    except (services.Conflict, ValueError) as exc:
        messages.error(request, str(exc))
    if request.htmx:
        return HttpResponseClientRedirect(f"/records/{record.pk}/")
    return redirect("console:record", pk=record.pk)


@require_POST
@permission_required("sync.resubmit_syncrecord", raise_exception=True)
def record_action(request, pk: int):
    """dry_run → the partial with what would happen; resubmit → back to the record page; ignore likewise."""
    record = get_object_or_404(SyncRecord.objects.select_related("source_connection"), pk=pk)
    wf = get_workflow(record.workflow)
    action = request.POST.get("action", "dry_run")
    if action == "resubmit_raw":
        return _resubmit_raw(request, record)
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


def _resubmit_raw(request, record: SyncRecord):
    try:
        payload = json.loads(request.POST.get("payload_json", ""))
        services.record_resubmit_raw(record_id=record.pk, actor=request.user,
                                     expected_version=param_int(request.POST, "version", 0), payload=payload,
                                     reason=request.POST.get("reason", ""))
        messages.success(request, "Resubmitted with the edited payload.")
    except services.NotAllowed as exc:
        return HttpResponseForbidden(str(exc))
    except json.JSONDecodeError as exc:
        messages.error(request, f"Not resubmitted: the payload is not valid JSON ({exc.msg}, line {exc.lineno}).")
    except services.StillInvalid as exc:
        messages.error(request, "Not resubmitted: " + " ".join(p.message for p in exc.problems))
    except (services.Conflict, services.NotActionable, ValueError) as exc:
        messages.error(request, str(exc))
    return redirect("console:record", pk=record.pk)


@permission_required("sync.view_syncrun", raise_exception=True)
def runs(request):
    page = Paginator(SyncRun.objects.order_by("-created_at"), 50).get_page(param_page(request.GET))
    return render(request, "console/runs.html", {"page": page})


@permission_required("sync.view_inboundevent", raise_exception=True)
def events(request):
    qs = InboundEvent.objects.order_by("-received_at", "-id")
    if status := request.GET.get("status"):
        qs = qs.filter(status=status)
    page = Paginator(qs, 50).get_page(param_page(request.GET))
    return render(request, "console/events.html", {"page": page, "status": status or ""})
