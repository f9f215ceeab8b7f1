"""The demo book of business: realistic, internally consistent, written once."""

from decimal import ROUND_HALF_UP, Decimal

from django.db.models import F, Sum

from apps.canonical.models import Engagement, ExternalId, Milestone
from apps.demo import book as demo_book, book_reference
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


def test_the_demo_firms_dimension_mappings_are_ones_the_sandbox_erp_accepts(firm):
    from apps.canonical.models import LegalEntity
    from apps.demo.finance_plan import EXPENSE_CODE, TIME_CODE
    from apps.finance.models import DimensionMapping
    from apps.sandbox.netsuite import time_bills
    from apps.sandbox.netsuite.reference import SEGMENTS

    us01 = LegalEntity.objects.get(code="US01")
    DimensionMapping.objects.create(legal_entity=us01, service_code="IMPL", department_id="11", class_id="101",
                                    location_id="2", item_id="501")  # as an older demo wrote it
    book_reference.setup_finance_reference()

    mappings = list(DimensionMapping.objects.select_related("legal_entity"))
    assert {(m.legal_entity.code, m.service_code) for m in mappings} == {
        (le, code) for le in ("US01", "UK01", "DE01") for code in ("CONS", "IMPL", "MSVC", "EXP")} - {
        book_reference.MISSING_MAPPING}
    for m in mappings:
        line = {"subsidiary": {"id": m.legal_entity.erp_subsidiary_id}, "department": {"id": m.department_id},
                "class": {"id": m.class_id}, "location": {"id": m.location_id}, "item": {"id": m.item_id}}
        # the sandbox NetSuite's own check of a time bill's and a charge's reference keys
        assert time_bills._segments(line, ("subsidiary", "department", "class", "location", "item")) is None, m
    by = {(m.legal_entity.code, m.service_code): m for m in mappings}
    assert (by["US01", "IMPL"].department_id, by["US01", "IMPL"].item_id) == ("20", "101")  # repaired
    assert SEGMENTS["location"][by["UK01", "CONS"].location_id] == "London"
    assert SEGMENTS["class"][by["DE01", "EXP"].class_id] == "Pass-through expenses"
    # the live demo traffic bills with the book's own codes
    assert ("US01", TIME_CODE) in by and ("US01", EXPENSE_CODE) in by


def test_the_books_crm_links_are_objects_the_crm_sandboxes_serve(connections):
    from django.test import Client

    from apps.canonical.models import Customer
    from apps.sandbox.credentials import DEFAULT_TOKENS
    from apps.sandbox.models import SandboxObject

    demo_book.build(n_engagements=12, seed=3)
    http = Client()
    hubspot = {"HTTP_AUTHORIZATION": f"Bearer {DEFAULT_TOKENS['hubspot']}"}
    salesforce = {"HTTP_AUTHORIZATION": f"Bearer {DEFAULT_TOKENS['salesforce']}"}
    systems = set()
    for e in Engagement.objects.select_related("customer"):
        [opp] = ExternalId.objects.filter(object_id=e.pk, object_type="opportunity")
        [acc] = ExternalId.objects.filter(object_id=e.customer.pk, object_type="account")
        assert opp.system == acc.system  # the deal is in its customer's CRM
        systems.add(opp.system)
        record = SyncRecord.objects.get(workflow="quote_to_project", search_keys__contains=[e.code])
        assert record.source_connection.slug == opp.system
        if opp.system == "hubspot":
            assert record.source_key == f"deal:{opp.external_id}"
            deal = http.get(f"/sandbox/hubspot/crm/v3/objects/deals/{opp.external_id}?associations=companies",
                            **hubspot)
            assert deal.status_code == 200, deal.content
            props = deal.json()["properties"]
            assert (props["dealstage"], props["amount"], props["handoff_engagement_code"]) == (
                "closedwon", f"{e.contract_value:.2f}", e.code)
            assert deal.json()["associations"]["companies"]["results"][0]["id"] == acc.external_id
            company = http.get(f"/sandbox/hubspot/crm/v3/objects/companies/{acc.external_id}", **hubspot)
            assert company.json()["properties"]["name"] == e.customer.name
            # the invoice write-back's call is answered, not 404
            assert http.patch(f"/sandbox/hubspot/crm/v3/objects/deals/{opp.external_id}",
                              {"properties": {"handoff_invoice_status": "open"}}, content_type="application/json",
                              **hubspot).status_code == 200
        else:
            assert record.source_key == f"opportunity:{opp.external_id}"
            o = http.get(f"/sandbox/salesforce/services/data/v62.0/sobjects/Opportunity/{opp.external_id}",
                         **salesforce)
            assert o.status_code == 200, o.content
            assert (o.json()["AccountId"], o.json()["StageName"], o.json()["Engagement_Code__c"]) == (
                acc.external_id, "Closed Won", e.code)
            a = http.get(f"/sandbox/salesforce/services/data/v62.0/sobjects/Account/{acc.external_id}", **salesforce)
            assert a.status_code == 200 and a.json()["Name"] == e.customer.name
            assert http.patch(f"/sandbox/salesforce/services/data/v62.0/sobjects/Account/{acc.external_id}",
                              {"Payment_Status__c": "open"}, content_type="application/json",
                              **salesforce).status_code == 204
    assert systems == {"hubspot", "salesforce"}
    assert not ExternalId.objects.filter(external_id__startswith="demo-").exists()
    # one CRM account per customer of the book, each behind a sandbox object
    book_customers = Customer.objects.filter(pk__in=Engagement.objects.values("customer_id")).count()
    assert SandboxObject.objects.filter(system="hubspot", object_type="companies").count() + SandboxObject.objects \
        .filter(system="salesforce", object_type="Account").count() == book_customers


def test_nothing_in_the_book_happens_after_now_even_on_the_first_of_a_month(connections):
    from datetime import datetime, time as dtime, timedelta

    from django.utils import timezone

    from apps.finance.models import ExpenseEntry

    today = timezone.localdate()
    now = timezone.make_aware(datetime.combine(today.replace(day=1), dtime(8, 0)))
    demo_book.build(n_engagements=30, seed=11, now=now)

    for model in (TimeEntry, ExpenseEntry):
        assert model.objects.exists()
        assert not model.objects.filter(approved_at__gt=now).exists()
        assert not model.objects.filter(posted_at__gt=now).exists()
        assert not model.objects.filter(posted_at__lt=F("approved_at")).exists()
    assert not SyncRecord.objects.filter(created_at__gt=now).exists()
    assert not SyncRecord.objects.filter(completed_at__gt=now).exists()
    assert not Invoice.objects.filter(issued_on__gt=now.date()).exists()
    assert not Invoice.objects.filter(source_updated_at__gt=now).exists()
    # the last two days' work was approved "two days later": now, not in the future
    if TimeEntry.objects.filter(work_date__gte=now.date() - timedelta(days=2)).exists():
        assert TimeEntry.objects.filter(approved_at=now).exists()


def test_a_default_reconciliation_run_shows_the_books_deliberate_variances(connections):
    from apps.reconcile import services as reconcile
    from apps.reconcile.models import ReconciliationLine

    n = 200
    demo_book.build(n_engagements=n, seed=2026)
    run = reconcile.run_now(trigger="command")

    deliberate = max(3, n // 40)  # 5 here, 7 in the demo's 300
    assert run.status == "completed" and run.over_tolerance == deliberate, run.over_tolerance
    lines = ReconciliationLine.objects.filter(run=run, over_tolerance=True)
    assert len({ln.engagement_code for ln in lines}) == deliberate  # one month each, in complete months
    for ln in lines:
        assert run.period_from <= ln.period <= run.period_to
        assert ln.recognised < ln.billed  # the ERP recognised less than was billed
    assert SyncRecord.objects.filter(workflow="reconciliation", status="held").count() == deliberate
