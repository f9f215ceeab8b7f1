"""Small builders for reconciliation tests: engagements and the money records the run sums (H4's helpers)."""

from __future__ import annotations

import itertools
import uuid
from datetime import date
from decimal import Decimal

from apps.canonical.models import Customer, Engagement, LegalEntity
from apps.finance.models import ExpenseEntry, Invoice, RevenueEntry, TimeEntry

_seq = itertools.count(1)
LE_FOR = {"USD": "US01", "GBP": "UK01", "EUR": "DE01"}


def D(x) -> Decimal:
    return Decimal(str(x))


def engagement(code: str, contract_type: str, currency: str = "EUR", *, fee=None, start=date(2025, 1, 1),
               end=None, le: str | None = None) -> Engagement:
    legal = LegalEntity.objects.get(code=le or LE_FOR[currency])
    customer, _ = Customer.objects.get_or_create(name=f"Customer of {code}", defaults={"legal_entity": legal,
                                                                                         "currency": currency})
    return Engagement.objects.create(code=code, name=f"{code} project", customer=customer, legal_entity=legal,
                                     contract_type=contract_type, currency=currency, correlation_id=uuid.uuid4(),
                                     start_date=start, end_date=end, retainer_fee=D(fee) if fee is not None else None)


def time_entry(e: Engagement, on: date, amount, status: str = "posted", **kw) -> TimeEntry:
    return TimeEntry.objects.create(source_system="kantata", source_id=f"t{next(_seq)}", engagement=e,
                                    person="Ana Silva", role="Consultant", work_date=on, hours=D(kw.pop("hours", 1)),
                                    currency=e.currency, amount=D(amount), status=status, **kw)


def expense(e: Engagement, on: date, amount, status: str = "posted") -> ExpenseEntry:
    return ExpenseEntry.objects.create(source_system="kantata", source_id=f"x{next(_seq)}", engagement=e,
                                       category="Travel", incurred_on=on, spent_amount=D(amount),
                                       spent_currency=e.currency, currency=e.currency, amount=D(amount), status=status)


def invoice(e: Engagement, period: date | None, total, status: str = "open", issued_on: date | None = None,
            kind: str = "milestone") -> Invoice:
    n = next(_seq)
    return Invoice.objects.create(engagement=e, customer=e.customer, kind=kind, source_system="netsuite",
                                  external_id=f"inv{n}", number=f"INV-{n}", status=status, period=period,
                                  issued_on=issued_on, currency=e.currency, total=D(total), amount_due=D(total))


def revenue(e: Engagement, period: date, amount) -> RevenueEntry:
    return RevenueEntry.objects.create(engagement=e, period=period, amount=D(amount), currency=e.currency,
                                       source_system="netsuite", external_id=f"rev{next(_seq)}")
