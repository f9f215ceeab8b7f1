"""The engagement book the time & expense tests bill against (tests/test_time_to_billing*.py).

Acme's T&M engagement ENG-TM (US01, USD) is linked to Kantata workspace 7001 and priced from the "Acme USD" rate
card; its service codes CONSULT and EXP map to NetSuite segments in US01. Rates: EUR→USD 1.08 from 2026-10-01
(1.10 from 2026-11-01), USD→GBP 0.79 from 2026-10-01.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from apps.canonical.models import Customer, Engagement, LegalEntity, PaymentTerms, RateCard, RateCardLine
from apps.canonical.services import external_id_link
from apps.finance.models import DimensionMapping, ExchangeRate
from apps.sandbox.models import SandboxObject

WORKSPACE = "7001"
RATES = {"Consultant": Decimal("150.00"), "Senior Consultant": Decimal("200.00"), "Partner": Decimal("350.15")}


@dataclass
class Book:
    engagement: Engagement
    customer: Customer
    rate_card: RateCard


def make_engagement(*, code: str, workspace: str | None, legal_entity: str = "US01", currency: str = "USD",
                    contract_type: str = "t_and_m", tm_cap: Decimal | None = None, rate_card: RateCard | None = None,
                    start: date = date(2026, 1, 1), end: date = date(2026, 12, 31), status: str = "active",
                    markup: Decimal | None = None, customer: Customer | None = None, erp_job: bool = True) -> Engagement:
    le = LegalEntity.objects.get(code=legal_entity)
    customer = customer or Customer.objects.create(
        name=f"Customer of {code}", tax_id="12-3456789", country=le.country, currency=currency, legal_entity=le,
        payment_terms=PaymentTerms.objects.get(code="NET30"))
    eng = Engagement.objects.create(
        code=code, name=f"{code} delivery", customer=customer, legal_entity=le, contract_type=contract_type,
        contract_value=Decimal("500000.00"), currency=currency, start_date=start, end_date=end, rate_card=rate_card,
        correlation_id=uuid.uuid4(), status=status, tm_cap=tm_cap, expense_markup_pct=markup)
    if workspace:
        external_id_link(obj=eng, system="kantata", object_type="workspace", external_id=workspace)
    if erp_job:  # the job quote-to-project created in NetSuite for the engagement
        SandboxObject.objects.create(system="netsuite", object_type="job", external_key=f"HO-{eng.key}",
                                     data={"entityId": eng.code, "companyName": eng.name})
    return eng


def make_book() -> Book:
    """Needs the `firm` fixture (legal entities and terms)."""
    card = RateCard.objects.create(name="Acme USD", currency="USD")
    RateCardLine.objects.bulk_create([RateCardLine(rate_card=card, role=r, rate=v) for r, v in RATES.items()])
    eng = make_engagement(code="ENG-TM", workspace=WORKSPACE, rate_card=card)
    us01 = LegalEntity.objects.get(code="US01")
    DimensionMapping.objects.create(legal_entity=us01, service_code="CONSULT", department_id="10", class_id="1",
                                    location_id="1", item_id="100")
    DimensionMapping.objects.create(legal_entity=us01, service_code="EXP", department_id="10", class_id="3",
                                    location_id="1", item_id="200")
    ExchangeRate.objects.bulk_create([
        ExchangeRate(from_currency="EUR", to_currency="USD", rate=Decimal("1.08"), rate_date=date(2026, 10, 1)),
        ExchangeRate(from_currency="EUR", to_currency="USD", rate=Decimal("1.10"), rate_date=date(2026, 11, 1)),
        ExchangeRate(from_currency="USD", to_currency="GBP", rate=Decimal("0.79"), rate_date=date(2026, 10, 1)),
    ])
    return Book(engagement=eng, customer=eng.customer, rate_card=card)


def time_payload(entry_id="1", *, minutes=480, role="Consultant", service_code="CONSULT", day="2026-11-02",
                 workspace=WORKSPACE, **extra) -> dict:
    """The canonical payload the Kantata parser builds for an approved time entry."""
    p = {"entry_type": "time", "action": "post", "event_type": "time_entry.approved", "entry_id": str(entry_id),
         "source_modified_at": "2026-11-03T09:00:00.000000Z", "workspace_id": workspace, "story_id": "9001",
         "task": "Delivery", "task_billable": True, "user_id": "501", "person": "Jane Doe", "role": role,
         "service_code": service_code, "date": day, "minutes": minutes, "write_off_minutes": "0", "billable": True,
         "psa_rate": "", "currency": "", "notes": "", "approved_at": "2026-11-03T09:00:00.000000Z",
         "engagement_code": "", "cap_decision": ""}
    p.update(extra)
    return p


def expense_payload(entry_id="1", *, amount="100.00", currency="EUR", service_code="EXP", day="2026-10-15",
                    workspace=WORKSPACE, **extra) -> dict:
    p = {"entry_type": "expense", "action": "post", "event_type": "expense.approved", "entry_id": str(entry_id),
         "source_modified_at": "2026-11-03T09:00:00.000000Z", "workspace_id": workspace, "user_id": "501",
         "person": "Jane Doe", "category": "Travel", "service_code": service_code, "date": day, "amount": amount,
         "currency": currency, "billable": True, "notes": "", "approved_at": "2026-11-03T09:00:00.000000Z",
         "engagement_code": "", "cap_decision": ""}
    p.update(extra)
    return p
