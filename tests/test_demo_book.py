"""The demo book of business: realistic, internally consistent, written once."""

from decimal import ROUND_HALF_UP, Decimal

from django.db.models import Sum

from apps.canonical.models import Engagement, ExternalId, Milestone
from apps.core import demo_book
from apps.finance.models import Invoice, RevenueEntry, TimeEntry
from apps.sync.models import SyncRecord


def test_the_book_is_consistent_and_written_once(connections):
    written = demo_book.build(n_engagements=25, seed=7)

    assert written["engagements"] == 25
    assert demo_book.build(n_engagements=25, seed=7) is None  # idempotent
    assert Engagement.objects.filter(name__endswith=demo_book.MARK).count() == 25
    types = set(Engagement.objects.values_list("contract_type", flat=True))
    assert types == {"t_and_m", "fixed_fee", "milestone", "retainer"}
    assert set(Engagement.objects.values_list("currency", flat=True)) == {"USD", "GBP", "EUR"}

    # every time entry is priced with the engagement's rate card, to the cent
    for t in TimeEntry.objects.select_related("engagement__rate_card")[:200]:
        rate = t.engagement.rate_card.lines.get(role=t.role).rate
        hours = Decimal(0) if t.task == "Internal meeting" else t.hours - t.write_off_hours
        # the ERP's rule (docs/money.md): per line, half up to the cent — 3.25 h × 112.50 is 365.63, not 365.62
        assert t.amount == (hours * rate).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP), t
    # a T&M month's invoice is exactly what was delivered that month
    for inv in Invoice.objects.filter(kind="time_and_expense")[:30]:
        delivered = (TimeEntry.objects.filter(engagement=inv.engagement, work_date__year=inv.period.year,
                                              work_date__month=inv.period.month).aggregate(s=Sum("amount"))["s"]
                     or Decimal(0))
        delivered += (inv.engagement.expenses.filter(incurred_on__year=inv.period.year,
                                                     incurred_on__month=inv.period.month)
                      .aggregate(s=Sum("amount"))["s"] or Decimal(0))
        assert inv.total == delivered
    # milestones add up to the contract value
    for e in Engagement.objects.filter(contract_type__in=["milestone", "fixed_fee"]):
        assert Milestone.objects.filter(engagement=e).aggregate(s=Sum("amount"))["s"] == e.contract_value
    # a capped T&M engagement never billed over its cap
    for e in Engagement.objects.filter(contract_type="t_and_m", tm_cap__isnull=False):
        assert (TimeEntry.objects.filter(engagement=e).aggregate(s=Sum("amount"))["s"] or 0) <= e.tm_cap
    assert RevenueEntry.objects.exists()
    # linked in every system, and the boards have history
    assert ExternalId.objects.filter(system="kantata", object_type="workspace").count() == 25
    assert SyncRecord.objects.filter(workflow="quote_to_project", status="succeeded").count() == 25
    assert SyncRecord.objects.filter(workflow="time_to_billing").count() >= TimeEntry.objects.count()
    oldest = SyncRecord.objects.order_by("created_at").first()
    assert (SyncRecord.objects.order_by("-created_at").first().created_at - oldest.created_at).days > 30
