"""The demo firm's finance reference data: rate cards, the PSA's service codes and the ERP dimensions they post
to, exchange rates and the finance policy. Shared by the book of business (book.py) and the live traffic
(finance_traffic.py), so both bill with the same codes."""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal

from django.utils import timezone

from apps.canonical.models import LegalEntity, RateCard, RateCardLine
from apps.finance.models import DimensionMapping, ExchangeRate, FinancePolicy
from apps.sandbox.netsuite.reference import is_valid, segment_id

ROLES = {  # role → rate in USD, GBP, EUR
    "Partner": ("450.00", "380.00", "420.00"),
    "Manager": ("320.00", "265.00", "295.00"),
    "Senior Consultant": ("245.00", "205.00", "225.00"),
    "Consultant": ("185.00", "150.00", "170.00"),
    "Analyst": ("125.00", "99.50", "112.50"),
}
CARD_CURRENCIES = ("USD", "GBP", "EUR")
SERVICE_CODES = {"Consulting": "CONS", "Implementation": "IMPL", "Managed services": "MSVC"}
EXPENSE_CODE = "EXP"  # the PSA's service code of billable expenses (pass-through)
# the ERP dimensions each service code posts to — department, class, service item — named as the sandbox NetSuite
# account names its segments (apps/sandbox/netsuite/reference.py: the one list of their ids, which the
# sandbox ERP validates against); the location is the legal entity's office
DIMENSIONS = {
    "CONS": ("Consulting", "Professional services", "Consulting services"),
    "IMPL": ("Engineering", "Professional services", "Engineering services"),
    "MSVC": ("Engineering", "Managed services", "Engineering services"),
    EXPENSE_CODE: ("Consulting", "Pass-through expenses", "Billable expenses"),
}
OFFICES = {"US01": "New York", "UK01": "London", "DE01": "Berlin"}  # any other legal entity: "Remote"
# the one mapping left out on purpose: DE01 managed services → time posted there is held (missing dimension)
MISSING_MAPPING = ("DE01", "MSVC")
# monthly ERP rates: 1 unit of the first currency = rate units of the second (a gentle drift per month)
RATE_BASE = {("EUR", "USD"): Decimal("1.0850"), ("GBP", "USD"): Decimal("1.2700"), ("EUR", "GBP"): Decimal("0.8550"),
             ("USD", "CAD"): Decimal("1.3600"), ("EUR", "CHF"): Decimal("0.9400")}
MONTHS = 6


def month_start(d: date) -> date:
    return d.replace(day=1)


def add_months(d: date, n: int) -> date:
    y, m = divmod(d.month - 1 + n, 12)
    return date(d.year + y, m + 1, 1)


def dimension_values(le_code: str) -> dict[str, dict[str, str]]:
    """service code → the DimensionMapping ids of one legal entity, from the sandbox ERP's segment names."""
    location = segment_id("location", OFFICES.get(le_code, "Remote"))
    return {code: {"department_id": segment_id("department", dept), "class_id": segment_id("class", cls),
                   "location_id": location, "item_id": segment_id("item", item)}
            for code, (dept, cls, item) in DIMENSIONS.items()}


def setup_finance_reference() -> None:
    """Rate cards, ERP dimension mappings, exchange rates and the finance policy. Idempotent."""
    FinancePolicy.current()
    for i, cur in enumerate(CARD_CURRENCIES):
        card, _ = RateCard.objects.get_or_create(name=f"Standard {cur} 2026", defaults={"currency": cur})
        for role, rates in ROLES.items():
            RateCardLine.objects.get_or_create(rate_card=card, role=role, defaults={"rate": Decimal(rates[i])})
    for le in LegalEntity.objects.all():
        for code, values in dimension_values(le.code).items():
            if (le.code, code) == MISSING_MAPPING:
                continue
            m, created = DimensionMapping.objects.get_or_create(legal_entity=le, service_code=code, defaults=values)
            if not created and not all(is_valid(kind, getattr(m, f"{kind}_id"))
                                       for kind in ("department", "class", "location", "item")):
                # ids the sandbox ERP does not have (an earlier build of the account): every posting would be refused
                DimensionMapping.objects.filter(pk=m.pk).update(**values)
    today = timezone.localdate()
    first = add_months(month_start(today), -MONTHS - 1)
    rows = []
    for k in range(MONTHS + 2):
        d = add_months(first, k)
        for (a, b), base in RATE_BASE.items():
            rows.append(ExchangeRate(from_currency=a, to_currency=b, rate_date=d,
                                     rate=(base * (Decimal(1) + Decimal(k - 3) / Decimal(400))).quantize(
                                         Decimal("0.00000001"))))
    ExchangeRate.objects.bulk_create(rows, ignore_conflicts=True)


def aware(d: date, hour: int = 10, minute: int = 0) -> datetime:
    return timezone.make_aware(datetime.combine(d, time(hour, minute)))
