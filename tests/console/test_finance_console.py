"""The finance-ops console and the engagement page, on the demo book of business."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db.models import Sum
from django.utils import timezone

from apps.canonical.models import Engagement
from apps.demo import book as demo_book
from apps.finance.models import Invoice


@pytest.fixture
def book(connections):
    demo_book.build(n_engagements=20, seed=3)


def test_finance_ops_sees_receivables_overdue_and_days_overdue(client, bob, book):
    today = timezone.localdate()
    inv = Invoice.objects.filter(status="open").first()
    Invoice.objects.filter(pk=inv.pk).update(due_on=today - timedelta(days=12), amount_due=inv.total)
    client.force_login(bob)

    response = client.get("/finance/", {"overdue": "1"})

    assert response.status_code == 200
    html = response.content.decode()
    assert f'data-invoice="{inv.number}"' in html
    row = html.split(f'data-invoice="{inv.number}"')[1].split("</tr>")[0]
    assert 'data-col="days_overdue">12<' in row
    overdue = response.context["receivables"]
    expected = (Invoice.objects.filter(status__in=["open", "payment_failed", "disputed"], due_on__lt=today,
                                       currency=inv.currency).aggregate(s=Sum("amount_due"))["s"])
    assert next(r for r in overdue if r["currency"] == inv.currency)["overdue"] == expected
    # every listed row is overdue and open
    assert all(r["days_overdue"] > 0 for r in response.context["rows"])


def test_invoice_filters_compose_and_stay_in_the_url(client, bob, book):
    client.force_login(bob)
    r = client.get("/finance/", {"status": "paid", "currency": "EUR", "sort": "amount"})
    rows = [x["invoice"] for x in r.context["rows"]]
    assert rows and all(i.status == "paid" and i.currency == "EUR" for i in rows)
    assert "status=paid" in r.context["query"] and "currency=EUR" in r.context["query"]
    code = rows[0].engagement.code
    r = client.get("/finance/", {"status": "paid", "q": code})
    assert {x["invoice"].engagement.code for x in r.context["rows"]} == {code}


def test_the_invoice_list_runs_a_fixed_number_of_queries(client, bob, book, django_assert_max_num_queries):
    client.force_login(bob)
    client.get("/finance/", {"status": "all"})  # warm the session and permission caches
    with django_assert_max_num_queries(12):
        r = client.get("/finance/", {"status": "all"})
    assert len(r.context["rows"]) == 50  # a full page, still the same number of queries


def test_the_engagement_page_shows_months_totals_changes_and_records(client, alice, book):
    e = Engagement.objects.filter(contract_type="t_and_m", invoices__isnull=False).distinct().first()
    client.force_login(alice)

    r = client.get(f"/engagements/{e.code}/")

    assert r.status_code == 200
    months = r.context["months"]
    assert sum((m["delivered"] for m in months), Decimal(0)) == (
        sum(t.amount for t in e.time_entries.all()) + sum(x.amount for x in e.expenses.all()))
    invoiced = e.invoices.exclude(status="void").aggregate(s=Sum("total"))["s"]
    assert r.context["totals"]["invoiced"] == invoiced
    assert r.context["totals"]["remaining"] == e.contract_value - invoiced
    records = list(r.context["records"])
    assert records and all(e.code in rec.search_keys for rec in records)
    from apps.finance.selectors import engagement_records
    assert any(rec.workflow == "quote_to_project" for rec in engagement_records(e, limit=10_000))
    assert client.get("/engagements/ENG-NOPE/").status_code == 404


def test_a_viewer_may_read_but_someone_without_finance_views_may_not(client, dave, book, django_user_model):
    client.force_login(dave)
    assert client.get("/finance/").status_code == 200
    nobody = django_user_model.objects.create_user("eve", password="x")
    client.force_login(nobody)
    assert client.get("/finance/").status_code == 403
