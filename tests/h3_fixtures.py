"""Builders for the change-order and forecast tests: engagements with invoices, time, expenses and revenue,
written directly as canonical rows (the workflows that create them in production are tested elsewhere)."""

from __future__ import annotations

import itertools
import uuid
from datetime import date, datetime, timezone as dt_tz
from decimal import Decimal

from apps.canonical.models import Customer, Engagement, LegalEntity, PaymentTerms, RateCard
from apps.canonical.services import external_id_link
from apps.finance.models import ExpenseEntry, Invoice, InvoiceLine, RevenueEntry, TimeEntry

_seq = itertools.count(1)


def rate_card(name: str = "Standard USD 2026", currency: str = "USD") -> RateCard:
    return RateCard.objects.get_or_create(name=name, defaults={"currency": currency})[0]


def engagement(*, name="Acme rollout", currency="USD", le="US01", contract_type="t_and_m",
               value="100000.00", start=date(2026, 1, 1), end=date(2026, 12, 31), customer: Customer | None = None,
               opportunity: tuple[str, str] | None = None, billing_schedule="monthly in arrears",
               customer_name: str = "", card: RateCard | None = None) -> Engagement:
    """An engagement (and its customer), optionally linked to a CRM opportunity: (system, id)."""
    legal = LegalEntity.objects.get(code=le)
    customer = customer or Customer.objects.create(
        name=customer_name or f"{name} Customer {next(_seq)}", tax_id=f"12-{1000000 + next(_seq)}",
        country=legal.country, currency=currency, legal_entity=legal,
        payment_terms=PaymentTerms.objects.get(code="NET30"))
    e = Engagement(name=name, customer=customer, legal_entity=legal, contract_type=contract_type,
                   contract_value=Decimal(value), currency=currency, start_date=start, end_date=end,
                   billing_schedule=billing_schedule, rate_card=card, correlation_id=uuid.uuid4(),
                   code=f"TMP-{uuid.uuid4().hex[:20]}")
    e.save()
    e.code = f"ENG-{e.pk:06d}"
    e.save(update_fields=["code"])
    if opportunity:
        external_id_link(obj=e, system=opportunity[0], object_type="opportunity", external_id=opportunity[1])
    return e


def invoice(e: Engagement, total: str, *, period: date | None = None, status="open", kind="milestone",
            issued: date | None = None) -> Invoice:
    n = next(_seq)
    return Invoice.objects.create(engagement=e, customer=e.customer, kind=kind, source_system="netsuite",
                                  external_id=f"inv-{n}", number=f"INV-{n}", status=status, period=period,
                                  issued_on=issued or period, currency=e.currency, total=Decimal(total),
                                  amount_due=Decimal(total))


def time_entry(e: Engagement, work_date: date, hours: str, amount: str, *, status="posted") -> TimeEntry:
    return TimeEntry.objects.create(source_system="kantata", source_id=f"te-{next(_seq)}", engagement=e,
                                    person="Ana Lima", role="Consultant", work_date=work_date, hours=Decimal(hours),
                                    rate=Decimal("0"), amount=Decimal(amount), currency=e.currency, status=status,
                                    approved_at=datetime(work_date.year, work_date.month, work_date.day, 18,
                                                         tzinfo=dt_tz.utc))


def expense(e: Engagement, incurred: date, amount: str, *, status="posted") -> ExpenseEntry:
    return ExpenseEntry.objects.create(source_system="kantata", source_id=f"ex-{next(_seq)}", engagement=e,
                                       category="Travel", incurred_on=incurred, spent_amount=Decimal(amount),
                                       spent_currency=e.currency, amount=Decimal(amount), currency=e.currency,
                                       status=status)


def invoice_line(inv: Invoice, *, time: TimeEntry | None = None, exp: ExpenseEntry | None = None) -> InvoiceLine:
    amount = (time or exp).amount
    return InvoiceLine.objects.create(invoice=inv, description="line", unit_amount=amount, amount=amount,
                                      time_entry=time, expense=exp)


def revenue(e: Engagement, period: date, amount: str) -> RevenueEntry:
    return RevenueEntry.objects.create(engagement=e, period=period, amount=Decimal(amount), currency=e.currency,
                                       source_system="netsuite", external_id=f"rev-{next(_seq)}")
