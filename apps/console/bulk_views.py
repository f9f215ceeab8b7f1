"""Bulk actions from the exception queue: preview (POST), the preview/progress page (GET), confirm (POST).

The preview POST takes the records either as `ids` (the queue's checkboxes) or as `all_matching=1` + `filter`
(the queue's URL query: every held record the filter selects), plus `action` (resubmit / fix / assign / ignore)
and its parameters: `fix__<field>` (e.g. fix__legal_entity=US01, fix__account__tax_id=…), `assignee` (a
username), `reason` (ignore), `note` (for the audit trail). When the action's parameters are missing (the queue's
bulk bar only names the action), the answer is a form asking for them that carries the selection along. Nothing
changes until the creator confirms.
"""

from __future__ import annotations


from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import permission_required
from django.http import HttpResponseForbidden, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from apps.sync import bulk as bulk_service
from apps.sync.bulk_checks import fix_fields_for
from apps.sync.bulk_run import failures_of
from apps.sync.desk import TEAM_GROUPS
from apps.sync.errors import NotAllowed
from apps.sync.models import BulkAction
from apps.sync.workflows.catalog import field_label

from .forms import fix_choices
from .queue import held_queryset

ACTION_LABELS = {
    "resubmit": "Resubmit",
    "fix": "Fix and resubmit",
    "assign": "Assign",
    "ignore": "Resolve without resubmitting",
}
FILTER_KEYS_DROPPED = {"page"}


def _htmx_partial(request) -> bool:
    return bool(request.htmx) and not request.htmx.boosted


def _clean_filter(query: str) -> str:
    """The queue's filter as a URL query, without the page number."""
    qd = QueryDict(query or "", mutable=True)
    for key in FILTER_KEYS_DROPPED:
        qd.pop(key, None)
    return qd.urlencode()


def _queue_url(filter_query: str) -> str:
    url = reverse("console:exceptions")
    return f"{url}?{filter_query}" if filter_query else url


def _filtered_ids(filter_query: str, user) -> list[int]:
    """Every held record the queue's filter selects for this user — what "all matching" in the queue showed —
    at most one more than a bulk action takes."""
    qs = held_queryset(QueryDict(filter_query or "").dict(), user=user)
    return list(qs.values_list("id", flat=True)[: bulk_service.MAX_RECORDS + 1])


def _posted_ids(post) -> list[str]:
    return [part.strip() for value in post.getlist("ids") for part in value.split(",") if part.strip()]


def _posted_params(post) -> dict:
    changes = {key[len("fix__"):].replace("__", "."): value for key, value in post.items()
               if key.startswith("fix__") and value.strip()}
    return {"changes": changes, "assignee": post.get("assignee", ""), "reason": post.get("reason", ""),
            "note": post.get("note", "")}


def _context(request, bulk: BulkAction | None, **extra) -> dict:
    ctx = {"bulk": bulk, "action_labels": ACTION_LABELS, **extra}
    if bulk is None:
        return ctx
    preview = bulk.preview or {}
    params = bulk.params or {}
    ctx.update(
        preview=preview,
        action_label=ACTION_LABELS.get(bulk.action, bulk.action),
        changes=[{"field": field_label(k), "path": k, "value": v}
                 for k, v in (params.get("changes") or {}).items()],
        is_creator=bulk.actor_id == request.user.pk,
        can_confirm=(bulk.status == BulkAction.Status.PREVIEWED and bulk.actor_id == request.user.pk
                     and preview.get("would_pass", {}).get("count", 0) > 0),
        **_progress_context(bulk),
    )
    return ctx


def _progress_context(bulk: BulkAction) -> dict:
    return {
        "bulk": bulk,
        "back_url": _queue_url(bulk.filter_query),
        "percent": int(100 * bulk.done / bulk.total) if bulk.total else 0,
        "running": bulk.status in (BulkAction.Status.QUEUED, BulkAction.Status.RUNNING),
        "failures": failures_of(bulk),
        "errors": [e for e in (bulk.log or []) if isinstance(e, dict) and "error" in e],
    }


def _has_params(action: str, params: dict) -> bool:
    if action == "fix":
        return bool(params["changes"])
    if action == "assign":
        return bool(params["assignee"].strip())
    if action == "ignore":
        return bool(params["reason"].strip())
    return True


def _params_form(action: str, *, all_matching: bool, ids: list[str], filter_query: str, params: dict,
                 workflows: set[str]) -> dict:
    """What the parameters step needs: the selection carried along, and the inputs of the chosen action (for a
    fix, the fields the selected records' workflows offer)."""
    form = {"action": action, "all_matching": all_matching, "ids": ids, "filter": filter_query,
            "values": params, "label": ACTION_LABELS.get(action, action)}
    if action == "fix":
        form["fields"] = [{"name": "fix__" + path.replace(".", "__"), "label": field_label(path),
                           "choices": fix_choices(path), "value": params["changes"].get(path, "")}
                          for path in fix_fields_for(workflows)]
    elif action == "assign":
        form["users"] = list(get_user_model().objects.filter(is_active=True, groups__name__in=TEAM_GROUPS)
                             .distinct().order_by("username").values_list("username", flat=True))
    return form


@require_POST
@permission_required("sync.resubmit_syncrecord", raise_exception=True)
def bulk_preview(request):
    """Preview a bulk action. Without the action's parameters (the queue's bulk bar only names the action),
    answer with the form that asks for them, carrying the selection along."""
    action = request.POST.get("action", "")
    filter_query = _clean_filter(request.POST.get("filter", ""))
    all_matching = request.POST.get("all_matching") == "1"
    posted_ids = _posted_ids(request.POST)
    params = _posted_params(request.POST)
    back_url = _queue_url(filter_query)
    form = None
    try:
        ids = _filtered_ids(filter_query, request.user) if all_matching else posted_ids
        if action in ("fix", "assign", "ignore") and (all_matching or posted_ids):
            workflows = bulk_service.workflows_of(bulk_service.unique_ids(ids)) if action == "fix" else set()
            form = _params_form(action, all_matching=all_matching, ids=posted_ids, filter_query=filter_query,
                                params=params, workflows=workflows)
            if not _has_params(action, params):
                return render(request, "console/bulk.html",
                              _context(request, None, params_form=form, back_url=back_url))
        bulk = bulk_service.bulk_preview(actor=request.user, action=action, record_ids=ids, params=params,
                                         filter_query=filter_query)
    except NotAllowed as exc:
        return HttpResponseForbidden(str(exc))
    except bulk_service.BulkError as exc:
        return render(request, "console/bulk.html",
                      _context(request, None, error=str(exc), params_form=form, back_url=back_url), status=400)
    url = reverse("console:bulk", args=[bulk.pk])
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)


@require_GET
@permission_required("sync.resubmit_syncrecord", raise_exception=True)
def bulk_detail(request, pk: int):
    """The preview with its Confirm button; once confirmed, the progress (an htmx poll gets only the partial)."""
    if _htmx_partial(request):
        # polled every second while it runs: leave the big columns (the preview, 10,000 ids) in the database
        bulk = get_object_or_404(BulkAction.objects.defer("preview", "record_ids", "params"), pk=pk)
        return render(request, "console/bulk.html#progress", _progress_context(bulk))
    bulk = get_object_or_404(BulkAction.objects.select_related("actor"), pk=pk)
    return render(request, "console/bulk.html", _context(request, bulk))


@require_POST
@permission_required("sync.resubmit_syncrecord", raise_exception=True)
def bulk_confirm(request, pk: int):
    bulk = get_object_or_404(BulkAction, pk=pk)
    try:
        bulk_service.bulk_confirm(bulk=bulk, actor=request.user)
        messages.success(request, "Confirmed: the bulk action is running.")
    except NotAllowed as exc:
        return HttpResponseForbidden(str(exc))
    except bulk_service.BulkError as exc:
        messages.error(request, str(exc))
    url = reverse("console:bulk", args=[bulk.pk])
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)
