"""Read-side queries for the finance-ops console and the engagement page. Each runs a fixed number of queries,
whatever the number of invoices, entries or engagements (aggregates in PostgreSQL, not loops in Python)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from django.db.models import Count, DecimalField, Q, Sum, Value
from django.db.models.functions import Coalesce, TruncMonth

from apps.canonical.models import Engagement
from apps.sync.models import SyncRecord

from .models import ExpenseEntry, Invoice, RevenueEntry, TimeEntry

OPEN_STATUSES = (Invoice.Status.OPEN, Invoice.Status.PAYMENT_FAILED, Invoice.Status.DISPUTED)
BILLING_WORKFLOWS = ("time_to_billing", "milestone_to_invoice", "invoice_payment_to_crm", "reconciliation")
ZERO = Value(Decimal("0"), output_field=DecimalField(max_digits=18, decimal_places=2))


def receivables(today: date) -> list[dict]:
    """Per currency: open receivables, the overdue part, disputed and failed-payment counts. One query."""
    rows = (Invoice.objects.filter(status__in=OPEN_STATUSES).values("currency")
            .annotate(open=Coalesce(Sum("amount_due"), ZERO),
                      overdue=Coalesce(Sum("amount_due", filter=Q(due_on__lt=today)), ZERO),
                      invoices=Count("id"), overdue_invoices=Count("id", filter=Q(due_on__lt=today)),
                      disputed=Count("id", filter=Q(status=Invoice.Status.DISPUTED)),
                      failed=Count("id", filter=Q(status=Invoice.Status.PAYMENT_FAILED)))
            .order_by("currency"))
    return list(rows)


def billing_exceptions() -> list[dict]:
    """Held and dead billing records per workflow and currency: the revenue at risk. One query."""
    return list(SyncRecord.objects.filter(status__in=SyncRecord.ACTIONABLE, workflow__in=BILLING_WORKFLOWS)
                .values("workflow", "currency").annotate(records=Count("id"), amount=Coalesce(Sum("amount"), ZERO))
                .order_by("workflow", "currency"))


def unposted_time() -> list[dict]:
    """Approved time priced but not posted to the ERP yet, per currency. One query."""
    return list(TimeEntry.objects.filter(status=TimeEntry.Status.PRICED).values("currency")
                .annotate(entries=Count("id"), amount=Coalesce(Sum("amount"), ZERO)).order_by("currency"))


INVOICE_SORTS = {"due": ("due_on", "id"), "-due": ("-due_on", "-id"), "amount": ("-amount_due", "id"),
                 "issued": ("-issued_on", "-id")}


def invoices(params: dict, today: date):
    """Invoices filtered by status / currency / channel / overdue / text, for the console list (lazy queryset)."""
    qs = Invoice.objects.select_related("engagement", "customer")
    status = params.get("status") or "open"
    if status == "open":
        qs = qs.filter(status__in=OPEN_STATUSES)
    elif status in Invoice.Status.values:
        qs = qs.filter(status=status)
    if params.get("currency"):
        qs = qs.filter(currency=params["currency"][:3].upper())
    if params.get("channel") in ("netsuite", "stripe"):
        qs = qs.filter(source_system=params["channel"])
    if params.get("overdue") == "1":
        qs = qs.filter(due_on__lt=today, status__in=OPEN_STATUSES)
    q = (params.get("q") or "").strip()[:100]
    if q:
        qs = qs.filter(Q(number__iexact=q) | Q(external_id=q) | Q(engagement__code__iexact=q)
                       | Q(customer__name__icontains=q))
    sort = params.get("sort") if params.get("sort") in INVOICE_SORTS else "due"
    return qs.order_by(*INVOICE_SORTS[sort])


def days_overdue(invoice: Invoice, today: date) -> int:
    if invoice.status not in OPEN_STATUSES or not invoice.due_on or invoice.due_on >= today:
        return 0
    return (today - invoice.due_on).days


def engagement_months(engagement: Engagement) -> list[dict]:
    """Per month: hours and value delivered (PSA), invoiced (ERP/billing engine, by the invoice's period) and
    recognised (ERP). Four queries."""
    months: dict[date, dict] = {}

    def row(m) -> dict:
        m = m.date() if hasattr(m, "date") else m
        return months.setdefault(m, {"month": m, "hours": Decimal(0), "delivered": Decimal(0),
                                     "invoiced": Decimal(0), "recognised": Decimal(0)})

    live = ~Q(status=TimeEntry.Status.REVERSED)
    for r in (TimeEntry.objects.filter(live, engagement=engagement).annotate(m=TruncMonth("work_date"))
              .values("m").annotate(h=Sum("hours"), v=Sum("amount")).order_by()):
        row(r["m"])["hours"] += r["h"]
        row(r["m"])["delivered"] += r["v"]
    for r in (ExpenseEntry.objects.filter(~Q(status=ExpenseEntry.Status.REVERSED), engagement=engagement)
              .annotate(m=TruncMonth("incurred_on")).values("m").annotate(v=Sum("amount")).order_by()):
        row(r["m"])["delivered"] += r["v"]
    for r in (Invoice.objects.filter(engagement=engagement, period__isnull=False).exclude(status=Invoice.Status.VOID)
              .values("period").annotate(v=Sum("total")).order_by()):
        row(r["period"].replace(day=1))["invoiced"] += r["v"]
    for r in RevenueEntry.objects.filter(engagement=engagement).values("period").annotate(v=Sum("amount")).order_by():
        row(r["period"].replace(day=1))["recognised"] += r["v"]
    return [months[m] for m in sorted(months)]


def engagement_totals(engagement: Engagement) -> dict:
    """Contract value, invoiced to date (not void), paid, open, and what remains to invoice. One query."""
    agg = (Invoice.objects.filter(engagement=engagement).exclude(status=Invoice.Status.VOID)
           .aggregate(invoiced=Coalesce(Sum("total"), ZERO), paid=Coalesce(Sum("amount_paid"), ZERO),
                      open=Coalesce(Sum("amount_due", filter=Q(status__in=OPEN_STATUSES)), ZERO)))
    agg["remaining"] = engagement.contract_value - agg["invoiced"]
    return agg


def engagement_records(engagement: Engagement, limit: int = 50):
    """Sync records that carry this engagement's code in their search keys (newest first)."""
    return (SyncRecord.objects.filter(search_keys__contains=[engagement.code.upper()])
            .select_related("source_connection").order_by("-created_at")[:limit])
