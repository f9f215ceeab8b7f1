"""The finance-ops console (receivables, billing exceptions, invoices with days overdue) and the engagement page
(terms, change history, month by month delivered / invoiced / recognised, invoices, milestones, sync records).
Thin views: the numbers come from apps/finance/selectors.py."""

from __future__ import annotations

from django.contrib.auth.decorators import permission_required
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.http import require_safe

from apps.canonical.models import CURRENCIES, Engagement
from apps.core.inputs import param_page
from apps.finance import selectors
from apps.finance.models import Invoice

from .queue import CountedPaginator


def _htmx(request) -> bool:
    return bool(getattr(request, "htmx", False)) and not request.htmx.boosted


@require_safe
@permission_required("finance.view_invoice", raise_exception=True)
def finance_console(request):
    today = timezone.localdate()
    params = request.GET.dict()
    qs = selectors.invoices(params, today)
    page = CountedPaginator(qs, 50, count=qs.count()).get_page(param_page(request.GET))
    rows = [{"invoice": inv, "days_overdue": selectors.days_overdue(inv, today)} for inv in page.object_list]
    base = request.GET.copy()
    base.pop("page", None)
    context = {
        "receivables": selectors.receivables(today), "exceptions": selectors.billing_exceptions(),
        "unposted": selectors.unposted_time(), "rows": rows, "page": page, "params": params,
        "statuses": [("open", "Open (incl. failed, disputed)"), ("all", "All")] + list(Invoice.Status.choices),
        "currencies": CURRENCIES, "query": base.urlencode(), "today": today,
    }
    template = "console/finance.html#invoices" if _htmx(request) else "console/finance.html"
    return render(request, template, context)


@require_safe
@permission_required("canonical.view_engagement", raise_exception=True)
def engagement_detail(request, code: str):
    engagement = get_object_or_404(
        Engagement.objects.select_related("customer", "legal_entity", "rate_card"), code=code)
    context = {
        "e": engagement, "months": selectors.engagement_months(engagement),
        "totals": selectors.engagement_totals(engagement),
        "invoices": engagement.invoices.order_by("-issued_on", "-id")[:100],
        "milestones": engagement.milestones.order_by("due_date", "id"),
        "changes": engagement.changes.order_by("-created_at")[:50],
        "records": selectors.engagement_records(engagement),
        "today": timezone.localdate(),
    }
    return render(request, "console/engagement.html", context)
