"""The reconciliation report: per engagement and month, delivered vs billed vs recognised side by side, the
variance and whether it is above the tolerance; filters in the URL, paginated, a streaming CSV of the same
filter, the last run's status and a "Run now" button (POST, permission-checked, audited).

The page runs a fixed number of queries whatever the page size (run, summary per currency, one page of lines,
the exception status of those lines).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.db.models import Count, Q, Sum
from django.http import HttpResponseForbidden
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from apps.canonical.models import CURRENCIES, Engagement
from apps.console.boards import csv_response
from apps.core.inputs import param_id, param_page
from apps.console.queue import CountedPaginator
from apps.sync.models import SyncRecord
from apps.sync.workflows import reconciliation as wf

from . import services
from .figures import add_months
from .models import ReconciliationLine, ReconciliationRun, source_key

PER_PAGE = 50
CONTRACT_TYPES = list(Engagement.ContractType.choices)
LINE_FIELDS = ["id", "engagement_id", "engagement_code", "period", "contract_type", "currency", "delivered", "billed",
               "recognised", "expected", "compared", "variance", "over_tolerance"]


def _htmx(request) -> bool:
    return bool(getattr(request, "htmx", False)) and not request.htmx.boosted


def _month(value: str | None) -> date | None:
    return wf.parse_period(value or "")


@dataclass
class Filters:
    """The report's filters, from and back to the URL (unknown values are dropped, not errors)."""

    run: int | None = None
    period: date | None = None
    contract_type: str = ""
    currency: str = ""
    over: bool = False

    @classmethod
    def from_query(cls, q) -> "Filters":
        ctype = q.get("contract_type", "")
        currency = q.get("currency", "").upper()
        return cls(run=param_id(q, "run"), period=_month(q.get("period")),
                   contract_type=ctype if ctype in dict(CONTRACT_TYPES) else "",
                   currency=currency if currency in CURRENCIES else "", over=q.get("over") in ("1", "on", "true"))

    def apply(self, qs):
        if self.period:
            qs = qs.filter(period=self.period)
        if self.contract_type:
            qs = qs.filter(contract_type=self.contract_type)
        if self.currency:
            qs = qs.filter(currency=self.currency)
        if self.over:
            qs = qs.filter(over_tolerance=True)
        return qs

    def query(self, **extra) -> str:
        from django.http import QueryDict

        q = QueryDict(mutable=True)
        for k, v in (("run", self.run), ("period", f"{self.period:%Y-%m}" if self.period else ""),
                     ("contract_type", self.contract_type), ("currency", self.currency),
                     ("over", "1" if self.over else "")):
            if v:
                q[k] = str(v)
        for k, v in extra.items():
            q[k] = str(v)
        return q.urlencode()


def _runs(f: Filters):
    """(the newest run of any status — for the status box —, the run whose lines are shown)."""
    latest = ReconciliationRun.objects.select_related("requested_by").order_by("-created_at", "-id").first()
    if f.run:
        shown = ReconciliationRun.objects.filter(pk=f.run, status=ReconciliationRun.Status.COMPLETED).first()
    elif latest is not None and latest.status == ReconciliationRun.Status.COMPLETED:
        shown = latest
    else:
        shown = (ReconciliationRun.objects.filter(status=ReconciliationRun.Status.COMPLETED)
                 .order_by("-finished_at", "-id").first())
    return latest, shown


def _months(run: ReconciliationRun | None) -> list[date]:
    if run is None:
        return []
    out, m = [], run.period_to
    while m >= run.period_from:
        out.append(m)
        m = add_months(m, -1)
    return out


def exception_status(keys: list[str]) -> dict[str, dict]:
    """The exception record of each line (one query): its id, status, and "accepted" / "resolved" for a closed
    one (accepted: a person accepted the variance; resolved: the variance went away)."""
    if not keys:
        return {}
    out = {}
    for key, pk, status, accepted in (SyncRecord.objects.filter(workflow=wf.NAME, source_key__in=keys)
                                      .values_list("source_key", "id", "status", "context__accepted")):
        label = ("accepted" if accepted else "resolved") if status == SyncRecord.Status.SUCCEEDED else status
        out[key] = {"id": pk, "status": status, "label": label}
    return out


@require_safe
@permission_required("reconcile.view_reconciliationline", raise_exception=True)
def report(request):
    f = Filters.from_query(request.GET)
    latest, run = _runs(f)
    htmx = _htmx(request)
    if htmx and request.GET.get("partial") == "status":  # the status box polls while a run is in flight
        response = render(request, "reconcile/report.html#run_status",
                          {"latest": latest, "run": run, "can_run": services.can_run(request.user), "f": f})
        watched = request.GET.get("watch", "")
        if watched and (latest is None or str(latest.pk) != watched or not latest.in_flight):
            response["HX-Refresh"] = "true"  # the run it watched has finished: reload the page with its lines
        return response
    summary, rows, page = [], [], None
    if run is not None:
        qs = f.apply(ReconciliationLine.objects.filter(run=run))
        summary = list(qs.values("currency").annotate(
            lines=Count("id"), over=Count("id", filter=Q(over_tolerance=True)),
            variance=Sum("variance", filter=Q(over_tolerance=True))).order_by("currency"))
        total = sum(s["lines"] for s in summary)
        paginator = CountedPaginator(qs.order_by("-period", "engagement_code").only(*LINE_FIELDS), PER_PAGE,
                                     count=total)
        page = paginator.get_page(param_page(request.GET))
        rows = list(page.object_list)
        statuses = exception_status([ln.source_key for ln in rows])
        for ln in rows:
            ln.exception = statuses.get(ln.source_key)
    context = {
        "f": f, "run": run, "latest": latest, "summary": summary, "rows": rows, "page": page,
        "months": _months(run), "contract_types": CONTRACT_TYPES, "currencies": CURRENCIES,
        "filter_qs": f.query(), "can_run": services.can_run(request.user),
        "default_range": services.default_range(),
        "figure_labels": {"delivered": "Delivered", "billed": "Billed", "recognised": "Recognised",
                          "expected": "Retainer fee"},
    }
    return render(request, "reconcile/report.html#report" if htmx else "reconcile/report.html", context)


@require_safe
@permission_required("reconcile.view_reconciliationline", raise_exception=True)
def export(request):
    """The same filter as the page, every line, streamed (chunks of 2,000 lines; one status query per chunk)."""
    f = Filters.from_query(request.GET)
    _, run = _runs(f)
    header = ["run", "engagement", "period", "contract_type", "currency", "delivered", "billed", "recognised",
              "retainer_fee", "variance", "tolerance", "over_tolerance", "compared", "exception_status", "record_id"]
    name = f"reconciliation-{run.pk if run else 'none'}" + (f"-{f.period:%Y-%m}" if f.period else "") + ".csv"

    def rows():
        if run is None:
            return
        qs = f.apply(ReconciliationLine.objects.filter(run=run)).order_by("-period", "engagement_code").values(
            *LINE_FIELDS)
        chunk = []
        for line in qs.iterator(chunk_size=2000):
            chunk.append(line)
            if len(chunk) == 2000:
                yield from _csv_rows(run, chunk)
                chunk = []
        yield from _csv_rows(run, chunk)

    return csv_response(name, header, rows())


def _csv_rows(run, chunk):
    statuses = exception_status([source_key(ln["engagement_code"], ln["period"]) for ln in chunk])
    for ln in chunk:
        ex = statuses.get(source_key(ln["engagement_code"], ln["period"])) or {}
        yield [run.pk, ln["engagement_code"], f"{ln['period']:%Y-%m}", ln["contract_type"], ln["currency"],
               ln["delivered"], ln["billed"], ln["recognised"], ln["expected"], ln["variance"], run.tolerance,
               "yes" if ln["over_tolerance"] else "no", ln["compared"].replace(",", " = "), ex.get("label", ""),
               ex.get("id", "")]


@require_POST
def run_now(request):
    """Queue a run (default: the last 12 complete months; or the months given). Finance ops and admins only."""
    if not services.can_run(request.user):
        return HttpResponseForbidden("Only finance ops and integration admins may run the reconciliation.")
    a, b = request.POST.get("from", ""), request.POST.get("to", "")
    period_from, period_to = _month(a), _month(b)
    if (a or b) and (period_from is None or period_to is None):
        messages.error(request, "Give the first and last month as YYYY-MM, or leave both empty.")
        return redirect("reconcile:report")
    try:
        run = services.request_run(actor=request.user, period_from=period_from, period_to=period_to)
    except services.BadRange as exc:
        messages.error(request, f"Not run: {exc}")
        return redirect("reconcile:report")
    messages.success(request, f"Reconciliation run #{run.pk} queued for {run.period_from:%Y-%m} to "
                              f"{run.period_to:%Y-%m}; this page shows its progress.")
    return redirect(reverse("reconcile:report"))
