"""The boards part of the exception desk: workflow status board, KPIs (+ CSV), connections (health and admin
actions), manual sync runs, and the audit export. Views stay thin: numbers come from kpis.py, charts from
charts.py; every admin action is POST-only, permission-checked and written to the audit trail.

Every page is login-required through LoginRequiredMiddleware.
"""

from __future__ import annotations

import csv
import json
import secrets
from datetime import datetime

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.db import transaction
from django.http import Http404, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from apps.sync import sweeper, wakeup
from apps.sync.callback_secrets import PATH_SECRET_KINDS, callback_secret_rotate
from apps.sync.models import AuditEntry, Connection
from apps.sync.wakeup import QUEUE_PRIORITIES

from . import charts, kpis

KPI_NAMES = ["cycle_time", "latency", "failure_rate", "open_exceptions", "resolution_time", "revenue_at_risk",
             "reconciliation"]
DRAIN_QUEUES = list(QUEUE_PRIORITIES)  # high, default, low


ROTATABLE_SECRETS = {Connection.Kind.HUBSPOT, Connection.Kind.KANTATA, Connection.Kind.NETSUITE}


def htmx_partial(request) -> bool:
    return bool(getattr(request, "htmx", False)) and not request.htmx.boosted


# ---------------------------------------------------------------- 1. workflow status board


@require_safe
def board(request):
    rows = kpis.board()
    for wf in rows:
        t = wf["trend"]
        wf["sparkline"] = charts.sparkline(
            [("held", t["held"], charts.HELD), ("succeeded", t["succeeded"], charts.SUCCEEDED)],
            days=t["days"], title=f"{wf['label']}: held and succeeded per day")
    context = {"workflows": rows, "columns": list(zip(kpis.BOARD_COLUMNS, kpis.BOARD_COLUMN_LABELS)),
               "now": timezone.now(), "trend_days": kpis.TREND_DAYS}
    template = "console/boards/board.html#board" if htmx_partial(request) else "console/boards/board.html"
    return render(request, template, context)


# ---------------------------------------------------------------- 2. KPIs


@require_safe
def kpi_page(request):
    period = kpis.parse_period(request.GET)
    cycle = kpis.cycle_time(period)
    failure = kpis.failure_rate(period)
    ages = kpis.open_exceptions()
    context = {
        "period": period, "kpi_names": KPI_NAMES,
        "cycle": cycle, "latency": kpis.latency(period), "failure": failure, "ages": ages,
        "resolution": kpis.resolution_time(period), "revenue": kpis.revenue_at_risk(),
        "recon": kpis.reconciliation_variance(period),
        "cycle_chart": charts.line_chart([(d["day"].strftime("%d %b"), d["p50_hours"]) for d in cycle["daily"]],
                                         unit=" h", title="Project setup: median cycle time per day (hours)"),
        "failure_chart": charts.line_chart([(d["day"].strftime("%d %b"), d["rate"]) for d in failure["daily"]],
                                           unit="%", title="Integration failure rate per day (% of records created)",
                                           colour=charts.HELD),
        "ages_chart": charts.bar_chart(
            [b["label"] for b in ages["buckets"]],
            [(f"P{p}", [b["counts"][j] for b in ages["buckets"]], charts.PRIORITY_COLOURS[p])
             for j, p in enumerate(ages["priorities"])],
            title="Open exceptions by age and priority"),
        "can_export_audit": request.user.has_perm("sync.view_raw_payload"),
    }
    template = "console/boards/kpis.html#kpis" if htmx_partial(request) else "console/boards/kpis.html"
    return render(request, template, context)


class Echo:
    """A file-like object whose write() hands the line back, for streaming csv.writer rows."""

    def write(self, value):
        return value


def _cell(value):
    """A CSV cell: datetimes in ISO 8601, JSON for structures, and text that a spreadsheet would run as a
    formula (=, +, -, @, tab, CR first) prefixed with a quote. Numbers stay numbers."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def csv_response(filename: str, header: list[str], rows) -> StreamingHttpResponse:
    writer = csv.writer(Echo())

    def lines():
        yield writer.writerow(header)
        for row in rows:
            yield writer.writerow([_cell(v) for v in row])

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


def _kpi_csv(name: str, period: kpis.Period) -> tuple[list[str], object]:
    """The header and rows of one KPI's export."""
    if name == "cycle_time":
        return (["record_id", "workflow", "source_key", "created_at", "completed_at", "cycle_hours"],
                ((rid, wf, key, c, d, kpis.hours(s)) for rid, wf, key, c, d, s in
                 kpis.cycle_time_rows(period).iterator(chunk_size=2000)))
    if name == "latency":
        return (["workflow", "succeeded", "p50_hours", "p90_hours", "avg_hours"],
                ([r["workflow"], r["count"], r["p50_hours"], r["p90_hours"], r["avg_hours"]]
                 for r in kpis.latency(period)))
    if name == "failure_rate":
        data = kpis.failure_rate(period)
        rows = [[r["workflow"], r["total"], r["failed"], r["rate"]] for r in data["workflows"]]
        rows.append(["all", data["total"], data["failed"], data["rate"]])
        return ["workflow", "records_created", "records_failed", "failure_rate_pct"], rows
    if name == "open_exceptions":
        data = kpis.open_exceptions()
        rows = [[b["key"], f"P{p}", b["counts"][j]] for b in data["buckets"] for j, p in enumerate(data["priorities"])]
        return ["age_bucket", "priority", "open_exceptions"], rows
    if name == "resolution_time":
        return (["record_id", "workflow", "priority", "held_at", "resolved_at", "action", "resolution_hours"],
                ((rid, wf, p, h, at, action, kpis.hours(s)) for rid, wf, p, h, at, action, s in
                 kpis.resolution_rows(period).iterator(chunk_size=2000)))
    if name == "revenue_at_risk":
        data = kpis.revenue_at_risk()
        return ["currency", "records", "amount"], [[c["currency"], c["records"], c["amount"]]
                                                   for c in data["currencies"]]
    if name == "reconciliation":
        data = kpis.reconciliation_variance(period)
        rows = [["checked", "", data["checked"], ""], ["with_variance", "", data["with_variance"], ""]]
        rows += [["open_variance", c["currency"], c["records"], c["amount"]] for c in data["open"]]
        return ["measure", "currency", "records", "amount"], rows
    raise Http404("No such KPI")


@require_safe
def kpi_export(request):
    name = request.GET.get("kpi", "")
    if name not in KPI_NAMES:
        return HttpResponseBadRequest(f"kpi must be one of: {', '.join(KPI_NAMES)}")
    period = kpis.parse_period(request.GET)
    header, rows = _kpi_csv(name, period)
    return csv_response(f"handoff-{name}-{period.start_date}-to-{period.end_date}.csv", header, rows)


# ---------------------------------------------------------------- 3. manual sync runs


@require_POST
@permission_required("sync.change_connection", raise_exception=True)
def manual_run(request):
    """Run the sweeper now, or wake the workers of one queue now; then back to the runs page."""
    action = request.POST.get("action", "")
    if action == "sweep":
        woken = sweeper.sweep()
        sent = sorted(k for k, v in woken.items() if v)
        result = {"run": "sweep", "woken": woken}
        messages.success(request, f"Sweeper ran: woke {', '.join(sent)}." if sent else
                         "Sweeper ran: nothing was due, or its workers were already woken.")
    elif action == "drain":
        queue = request.POST.get("queue", "")
        if queue not in DRAIN_QUEUES:
            return HttpResponseBadRequest(f"queue must be one of: {', '.join(DRAIN_QUEUES)}")
        sent = wakeup.enqueue_now(f"records:{queue}")
        result = {"run": "drain", "queue": queue, "enqueued": sent}
        messages.success(request, f"Queue “{queue}”: a worker was woken to drain it now." if sent else
                         f"Queue “{queue}”: a drain is already on its way (or Redis is unreachable; the sweeper "
                         f"will pick the work up).")
    else:
        return HttpResponseBadRequest("action must be sweep or drain")
    AuditEntry.objects.create(actor=request.user, record=None, action="manual_run", before={}, after=result)
    return redirect("console:runs")


# ---------------------------------------------------------------- 4. connections


class PauseForm(forms.Form):
    reason = forms.CharField(max_length=300, strip=True, error_messages={"required": "Say why it is paused."})


class ResumeForm(forms.Form):
    reason = forms.CharField(max_length=300, required=False, strip=True)


def connections_context(request, *, bound: dict | None = None, new_secret: dict | None = None) -> dict:
    """The list with its health numbers; `bound` = {connection pk: {form name: form}} to show a posted form's
    errors in its own row. Other apps add their own forms to each row (settings.HANDOFF_CONNECTION_PANELS: the
    templates included there, which read `r.bound`)."""
    rows = kpis.connection_health()
    for r in rows:
        c = r["connection"]
        r["bound"] = (bound or {}).get(c.pk, {})
        r["pause_form"] = r["bound"].get("pause") or PauseForm(prefix=f"c{c.pk}")
    return {"rows": rows, "can_change": request.user.has_perm("sync.change_connection"),
            "connection_panels": settings.HANDOFF_CONNECTION_PANELS, "new_secret": new_secret,
            "callback_secret_grace_hours": settings.HANDOFF_CALLBACK_SECRET_GRACE_HOURS}


@require_safe
@permission_required("sync.view_connection", raise_exception=True)
def connections(request):
    context = connections_context(request)
    template = "console/boards/connections.html#list" if htmx_partial(request) else "console/boards/connections.html"
    return render(request, template, context)


def _audit_connection(request, connection: Connection, action: str, before: dict, after: dict, reason: str = ""):
    AuditEntry.objects.create(actor=request.user, record=None, action=action,
                              before={"connection": connection.slug, **before},
                              after={"connection": connection.slug, **after}, reason=reason)


def _pause_state(c: Connection) -> dict:
    return {"paused": c.paused, "paused_reason": c.paused_reason,
            "paused_at": c.paused_at.isoformat() if c.paused_at else None}


@require_POST
@permission_required("sync.change_connection", raise_exception=True)
def connection_pause(request, pk: int):
    connection = get_object_or_404(Connection, pk=pk)
    form = PauseForm(request.POST, prefix=f"c{pk}")
    if not form.is_valid():
        context = connections_context(request, bound={pk: {"pause": form}})
        return render(request, "console/boards/connections.html", context, status=400)
    with transaction.atomic():
        c = Connection.objects.select_for_update().get(pk=pk)
        before = _pause_state(c)
        c.paused, c.paused_reason, c.paused_at = True, form.cleaned_data["reason"], timezone.now()
        c.paused_by = "admin"
        c.save(update_fields=["paused", "paused_reason", "paused_at", "paused_by", "updated_at"])
        _audit_connection(request, c, "connection_pause", before, _pause_state(c), form.cleaned_data["reason"])
    messages.success(request, f"{connection.name} is paused: records needing it wait until it is resumed.")
    return redirect("console:connections")


@require_POST
@permission_required("sync.change_connection", raise_exception=True)
def connection_resume(request, pk: int):
    get_object_or_404(Connection, pk=pk)
    form = ResumeForm(request.POST, prefix=f"c{pk}")
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    with transaction.atomic():
        c = Connection.objects.select_for_update().get(pk=pk)
        before = _pause_state(c)
        c.paused, c.paused_reason, c.paused_at, c.paused_by, c.consecutive_failures = False, "", None, "", 0
        c.save(update_fields=["paused", "paused_reason", "paused_at", "paused_by", "consecutive_failures",
                              "updated_at"])
        _audit_connection(request, c, "connection_resume", before, _pause_state(c), reason)
        # what waited for this system is due again: wake its workers once this commits
        transaction.on_commit(sweeper.sweep)
    messages.success(request, f"{c.name} is resumed.")
    return redirect("console:connections")


@require_POST
@permission_required("sync.change_connection", raise_exception=True)
def connection_rotate_secret(request, pk: int):
    """A new HubSpot client secret, shown once on this response and never again (the page does not show stored
    secrets). The audit trail records that it was rotated, not the secret."""
    connection = get_object_or_404(Connection, pk=pk)
    if connection.kind in PATH_SECRET_KINDS:
        return _rotate_callback_url_secret(request, pk)
    if connection.kind not in ROTATABLE_SECRETS:
        return HttpResponseBadRequest("Only a HubSpot, Kantata or NetSuite connection has an inbound secret Handoff "
                                      "issues (Stripe's webhook secret is issued by Stripe: paste it in the admin).")
    secret = secrets.token_urlsafe(32)
    with transaction.atomic():
        c = Connection.objects.select_for_update().get(pk=pk)
        had = bool(c.inbound_secret)
        c.inbound_secret = secret
        c.save(update_fields=["inbound_secret", "updated_at"])
        _audit_connection(request, c, "rotate_secret", {"inbound_secret": "set" if had else "not set"},
                          {"inbound_secret": "rotated"}, request.POST.get("reason", "").strip()[:300])
    context = connections_context(request, new_secret={"connection": c, "secret": secret})
    response = render(request, "console/boards/connections.html", context)
    response["Cache-Control"] = "no-store"
    return response


def _rotate_callback_url_secret(request, pk: int):
    """A new secret in the callback URL of a system that does not sign its callbacks (Salesforce): the full URL is
    shown once, for the Outbound Messages' Endpoint URL; the previous URL keeps working for the grace period, so
    messages queued in Salesforce are not refused while the admin changes it. Audited without the secret."""
    with transaction.atomic():
        c = Connection.objects.select_for_update().get(pk=pk)
        had = bool(c.callback_secret_hash)
        secret = callback_secret_rotate(c)
        c.save(update_fields=["callback_secret_hash", "callback_secret_previous_hash",
                              "callback_secret_previous_until", "updated_at"])
        until = c.callback_secret_previous_until if had else None
        _audit_connection(request, c, "rotate_callback_url_secret",
                          {"callback_url_secret": "set" if had else "not set"},
                          {"callback_url_secret": "rotated",
                           "previous_accepted_until": until.isoformat() if until else None},
                          request.POST.get("reason", "").strip()[:300])
    url = settings.HANDOFF_PUBLIC_URL.rstrip("/") + reverse("api:callback_secret_url", args=[c.slug, secret])
    context = connections_context(request, new_secret={"connection": c, "secret": secret, "url": url,
                                                       "previous_until": until})
    response = render(request, "console/boards/connections.html", context)
    response["Cache-Control"] = "no-store"
    return response


# ---------------------------------------------------------------- 5. audit export


@require_safe
@permission_required("sync.view_raw_payload", raise_exception=True)
def audit_export(request):
    period = kpis.parse_period(request.GET)
    qs = (AuditEntry.objects.filter(at__gte=period.start, at__lt=period.end).select_related("actor")
          .order_by("at", "id"))
    rows = ((e.id, e.at, e.actor.get_username() if e.actor else "", e.record_id or "", e.action, e.before,
             e.after, e.reason) for e in qs.iterator(chunk_size=2000))
    return csv_response(f"handoff-audit-{period.start_date}-to-{period.end_date}.csv",
                        ["id", "at", "actor", "record_id", "action", "before", "after", "reason"], rows)
