"""Builders: plain functions that write the rows a test starts from. Fixtures (the people, the firm, the
connections, the sandboxes) stay in conftest.py; these are called with whatever a test needs.

- Sync records: a canonical opportunity payload, records as the engine leaves them (pending, held), their
  attempts and audit entries.
- Engagements: `engagement` writes the canonical rows only; `linked_engagement` is one as quote-to-project leaves
  it, linked to sandbox objects in every system; `time_book` is the T&M book the time & expense tests bill against.
- Money: time, expenses, invoices (and their lines) and revenue of an engagement.
- Vendor payloads: a completed Kantata story, the canonical time and expense payloads the Kantata parser builds.
"""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timezone as dt_tz
from decimal import Decimal

from django.contrib.auth.models import Group, User
from django.utils import timezone

from apps.canonical.models import Customer, Engagement, LegalEntity, PaymentTerms, RateCard, RateCardLine
from apps.canonical.services import external_id_link
from apps.finance.models import (DimensionMapping, ExchangeRate, ExpenseEntry, Invoice, InvoiceLine, RevenueEntry,
                                 TimeEntry)
from apps.sandbox.models import SandboxObject
from apps.sync.models import Attempt, AuditEntry, SyncRecord

_seq = itertools.count(1)

LE_FOR = {"USD": "US01", "GBP": "UK01", "EUR": "DE01"}  # the legal entity that contracts in each currency


def D(x) -> Decimal:
    return Decimal(str(x))


# ------------------------------------------------------------------ people


def user(username: str, group: str, staff: bool = False) -> User:
    """A user in one of the roles' groups (needs the `roles` fixture); the password is "pw-<username>"."""
    made = User.objects.create_user(username, password="pw-" + username, is_staff=staff)
    made.groups.add(Group.objects.get(name=group))
    return made


# ------------------------------------------------------------------ sync records


def opportunity_payload(**overrides) -> dict:
    """A canonical opportunity as the CRM connectors build it: valid except for a missing legal entity (and
    whatever `overrides` break). An `account` override is merged into the account, not put in its place."""
    n = next(_seq)
    p = {
        "opportunity_id": f"90{n:05d}", "opportunity_name": f"Bluefin Analytics {n} — ERP rollout",
        "amount": "120000.00", "currency": "USD", "close_date": "2026-03-31", "contract_type": "fixed_fee",
        "start_date": "2026-04-15", "end_date": "2026-10-31", "service_line": "Implementation",
        "project_template": "", "billing_schedule": "", "billing_terms": "NET30", "legal_entity": "",
        "account": {"id": f"70{n:05d}", "name": f"Bluefin Analytics {n}", "tax_id": f"98-{n:07d}", "country": "US",
                    "parent_id": ""},
        "deal_id": f"90{n:05d}",
    }
    account = overrides.pop("account", None)
    p.update(overrides)
    if account:
        p["account"] = {**p["account"], **account}
    return p


def sync_records(connections, n=1, *, workflow="quote_to_project", stage="validate", status="pending",
                 source="hubspot", **fields) -> list[SyncRecord]:
    """`n` records made with bulk_create. Timestamps that Django sets itself (created_at) are applied after, when
    given, since auto_now_add overrides them on insert."""
    created_at = fields.pop("created_at", None)
    objs = [SyncRecord(workflow=workflow, stage=stage, status=status, source_connection=connections[source],
                       source_key=f"obj:{next(_seq)}", title="Test record", **fields) for _ in range(n)]
    made = SyncRecord.objects.bulk_create(objs)
    if created_at is not None:
        SyncRecord.objects.filter(pk__in=[r.pk for r in made]).update(created_at=created_at)
        for r in made:
            r.created_at = created_at
    return made


def sync_record(connections, **kw) -> SyncRecord:
    return sync_records(connections, 1, **kw)[0]


def held_record(connections, *, status="held", reason_code="missing_legal_entity", fault_fields=("legal_entity",),
                message=None, owner_team="pmo", title=None, payload=None, stage="validate",
                workflow="quote_to_project", source="hubspot", source_key=None) -> SyncRecord:
    """One record as the engine leaves it when it holds it (a quote-to-project one unless told otherwise), with the
    columns the engine derives (search keys, error signature)."""
    from apps.sync.queue_columns import error_signature, search_keys

    payload = payload or opportunity_payload()
    held = status in ("held", "dead")
    title = title if title is not None else payload["opportunity_name"]
    record = SyncRecord(
        workflow=workflow, stage=stage, status=status,
        reason_code=reason_code if held else "", fault_fields=list(fault_fields) if held else [],
        message=(message if message is not None else
                 f"No legal entity is set on “{title}”. Choose the legal entity that will "
                 f"contract and invoice this work.") if held else "",
        owner_team=owner_team, source_connection=connections[source],
        source_key=source_key or f"deal:{payload['deal_id']}", title=title,
        amount=payload.get("amount"), currency=payload.get("currency", "USD"),
        original_payload=payload, current_payload=payload, context={"fetched": True},
        held_at=timezone.now() if held else None)
    record.search_keys = search_keys(record)
    if held:
        record.error_signature = error_signature(record.reason_code, record.failed_system, record.message)
    record.save()
    return record


def held_records(connections, n: int = 1, *, status="held", reason="missing_legal_entity", team="pmo",
                 stage="validate", priority=2, source="hubspot", **payload_overrides) -> list[SyncRecord]:
    """`n` held quote-to-project records in one bulk_create (for the bulk actions' volumes); their NetSuite
    failure and error signature are fixed, not derived."""
    now = timezone.now()
    held = status in ("held", "dead")
    objs = []
    for _ in range(n):
        p = opportunity_payload(**{k: (dict(v) if isinstance(v, dict) else v) for k, v in payload_overrides.items()})
        objs.append(SyncRecord(
            workflow="quote_to_project", stage=stage, status=status, reason_code=reason if held else "",
            message=f"held: {reason}" if held else "", fault_fields=["legal_entity"] if held else [],
            failed_system="netsuite" if held else "", error_signature="abc123" if held else "",
            owner_team=team, priority=priority, source_connection=connections[source],
            source_key=f"deal:{p['deal_id']}", title=p["opportunity_name"], amount=p["amount"],
            currency=p["currency"], original_payload=p, current_payload=p, context={"fetched": True},
            held_at=now if held else None))
    return SyncRecord.objects.bulk_create(objs)


def fix_post(record: SyncRecord, action: str, **changes) -> dict:
    """What the browser posts from the fix form: every field as shown, with `changes` typed over it."""
    from apps.sync.payload import get_path
    from apps.sync.workflows.quote_to_project import FIX_FIELDS

    data = {p.replace(".", "__"): get_path(record.current_payload, p) or "" for p in FIX_FIELDS}
    data.update({k.replace(".", "__"): v for k, v in changes.items()})
    data.setdefault("version", record.version)
    data["action"] = action
    return data


def attempts(record, rows) -> list[Attempt]:
    """rows: (system, outcome, started_at) — bulk-created, then their started_at set (auto_now_add)."""
    made = Attempt.objects.bulk_create([Attempt(record=record, stage=record.stage, system=system, method="POST",
                                                url="http://x/", outcome=outcome) for system, outcome, _ in rows])
    for a, (_s, _o, at) in zip(made, rows):
        Attempt.objects.filter(pk=a.pk).update(started_at=at)
    return made


def audit_entry(record, action, at, *, actor=None, before=None) -> AuditEntry:
    entry = AuditEntry.objects.create(actor=actor, record=record, action=action, before=before or {})
    AuditEntry.objects.filter(pk=entry.pk).update(at=at)  # `at` is auto_now_add; the trail itself stays append-only
    return entry


# ------------------------------------------------------------------ engagements


def rate_card(name: str = "Standard USD 2026", currency: str = "USD") -> RateCard:
    return RateCard.objects.get_or_create(name=name, defaults={"currency": currency})[0]


def engagement(*, code: str | None = None, name: str | None = None, currency="USD", le: str | None = None,
               contract_type="t_and_m", value="100000.00", fee=None, start=date(2026, 1, 1), end=date(2026, 12, 31),
               customer: Customer | None = None, customer_name: str = "", tax_id: str = "", terms="NET30",
               opportunity: tuple[str, str] | None = None, billing_schedule="monthly in arrears",
               channel="erp", card: RateCard | None = None, status="active", tm_cap=None,
               markup=None) -> Engagement:
    """An engagement and its customer as canonical rows only (nothing in the sandboxes). Without `code` it gets
    ENG-<pk>; without `le` the legal entity of its currency; `opportunity` = (CRM system, id) links it."""
    legal = LegalEntity.objects.get(code=le or LE_FOR[currency])
    name = name or (f"{code} project" if code else "Acme rollout")
    customer = customer or Customer.objects.create(
        name=customer_name or (f"Customer of {code}" if code else f"{name} Customer {next(_seq)}"),
        tax_id=tax_id or f"12-{1000000 + next(_seq)}", country=legal.country, currency=currency, legal_entity=legal,
        payment_terms=PaymentTerms.objects.get(code=terms))
    e = Engagement(name=name, customer=customer, legal_entity=legal, contract_type=contract_type,
                   contract_value=Decimal(value), currency=currency, start_date=start, end_date=end,
                   billing_schedule=billing_schedule, billing_channel=channel, rate_card=card,
                   correlation_id=uuid.uuid4(), retainer_fee=D(fee) if fee is not None else None, status=status,
                   tm_cap=tm_cap, expense_markup_pct=markup, code=code or f"TMP-{uuid.uuid4().hex[:20]}")
    e.save()
    if not code:
        e.code = f"ENG-{e.pk:06d}"
        e.save(update_fields=["code"])
    if opportunity:
        external_id_link(obj=e, system=opportunity[0], object_type="opportunity", external_id=opportunity[1])
    return e


def linked_engagement(*, contract_type="milestone", currency="USD", legal_entity="US01", contract_value="100000.00",
                      billing_schedule="on milestones", channel="erp", crm="hubspot", in_erp=True, terms="NET30",
                      workspace=None, name=None) -> Engagement:
    """A customer and engagement as quote-to-project leaves them, with sandbox objects behind every link: the
    Kantata workspace, the NetSuite customer and job (`in_erp`), the CRM account and opportunity (`crm`)."""
    n = next(_seq)
    customer_name = name or f"Milestone Customer {n} {uuid.uuid4().hex[:6]}"
    e = engagement(name=f"{customer_name} — rollout", customer_name=customer_name, tax_id=f"12-{1000000 + n}",
                   currency=currency, le=legal_entity, contract_type=contract_type, value=contract_value,
                   start=None, end=None, billing_schedule=billing_schedule, channel=channel, terms=terms)
    customer = e.customer
    external_id_link(obj=e, system="kantata", object_type="workspace", external_id=workspace or workspace_id(e))
    if in_erp:
        ns_customer = SandboxObject.objects.create(system="netsuite", object_type="customer",
                                                   external_key=f"HO-{customer.key}",
                                                   data={"companyName": customer.name})
        external_id_link(obj=customer, system="netsuite", object_type="customer", external_id=str(ns_customer.pk))
        job = SandboxObject.objects.create(system="netsuite", object_type="job", external_key=f"HO-{e.key}",
                                           data={"entityId": e.code})
        external_id_link(obj=e, system="netsuite", object_type="job", external_id=str(job.pk))
    if crm == "hubspot":
        company = SandboxObject.objects.create(system="hubspot", object_type="companies",
                                               data={"properties": {"name": customer.name}, "associations": {}})
        deal = SandboxObject.objects.create(system="hubspot", object_type="deals",
                                            data={"properties": {"dealname": e.name},
                                                  "associations": {"companies": [str(company.pk)]}})
        external_id_link(obj=customer, system="hubspot", object_type="account", external_id=str(company.pk))
        external_id_link(obj=e, system="hubspot", object_type="opportunity", external_id=str(deal.pk))
    elif crm == "salesforce":
        acc_id, opp_id = f"001SBX{n:012d}", f"006SBX{n:012d}"
        SandboxObject.objects.create(system="salesforce", object_type="Account", external_key=acc_id,
                                     data={"fields": {"Name": customer.name}})
        SandboxObject.objects.create(system="salesforce", object_type="Opportunity", external_key=opp_id,
                                     data={"fields": {"Name": e.name, "AccountId": acc_id}})
        external_id_link(obj=customer, system="salesforce", object_type="account", external_id=acc_id)
        external_id_link(obj=e, system="salesforce", object_type="opportunity", external_id=opp_id)
    return Engagement.objects.select_related("customer", "legal_entity").get(pk=e.pk)


# The T&M book the time & expense tests bill against: Acme's engagement ENG-TM (US01, USD) is linked to Kantata
# workspace 7001 and priced from the "Acme USD" rate card; its service codes CONSULT and EXP map to NetSuite
# segments in US01. Rates: EUR→USD 1.08 from 2026-10-01 (1.10 from 2026-11-01), USD→GBP 0.79 from 2026-10-01.
WORKSPACE = "7001"
RATES = {"Consultant": Decimal("150.00"), "Senior Consultant": Decimal("200.00"), "Partner": Decimal("350.15")}


@dataclass
class Book:
    engagement: Engagement
    customer: Customer
    rate_card: RateCard


def psa_engagement(*, code: str, workspace: str | None, legal_entity: str = "US01", currency: str = "USD",
                   contract_type: str = "t_and_m", tm_cap: Decimal | None = None, rate_card: RateCard | None = None,
                   start: date = date(2026, 1, 1), end: date = date(2026, 12, 31), status: str = "active",
                   markup: Decimal | None = None, customer: Customer | None = None, erp_job: bool = True) -> Engagement:
    """An engagement that time is recorded against: linked to its Kantata workspace and (`erp_job`) with the job
    quote-to-project created for it in the NetSuite sandbox."""
    eng = engagement(code=code, name=f"{code} delivery", customer=customer, tax_id="12-3456789", currency=currency,
                     le=legal_entity, contract_type=contract_type, value="500000.00", start=start, end=end,
                     billing_schedule="", card=rate_card, status=status, tm_cap=tm_cap, markup=markup)
    if workspace:
        external_id_link(obj=eng, system="kantata", object_type="workspace", external_id=workspace)
    if erp_job:
        SandboxObject.objects.create(system="netsuite", object_type="job", external_key=f"HO-{eng.key}",
                                     data={"entityId": eng.code, "companyName": eng.name})
    return eng


def time_book() -> Book:
    """Needs the `firm` fixture (legal entities and terms)."""
    card = RateCard.objects.create(name="Acme USD", currency="USD")
    RateCardLine.objects.bulk_create([RateCardLine(rate_card=card, role=r, rate=v) for r, v in RATES.items()])
    eng = psa_engagement(code="ENG-TM", workspace=WORKSPACE, rate_card=card)
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


# ------------------------------------------------------------------ money


def time_entry(e: Engagement, work_date: date, hours, amount, *, status="posted") -> TimeEntry:
    return TimeEntry.objects.create(source_system="kantata", source_id=f"te-{next(_seq)}", engagement=e,
                                    person="Ana Lima", role="Consultant", work_date=work_date, hours=D(hours),
                                    rate=Decimal("0"), amount=D(amount), currency=e.currency, status=status,
                                    approved_at=datetime(work_date.year, work_date.month, work_date.day, 18,
                                                         tzinfo=dt_tz.utc))


def expense(e: Engagement, incurred: date, amount, *, status="posted") -> ExpenseEntry:
    return ExpenseEntry.objects.create(source_system="kantata", source_id=f"ex-{next(_seq)}", engagement=e,
                                       category="Travel", incurred_on=incurred, spent_amount=D(amount),
                                       spent_currency=e.currency, amount=D(amount), currency=e.currency,
                                       status=status)


def invoice(e: Engagement, total, *, period: date | None = None, status="open", kind="milestone",
            issued: date | None = None) -> Invoice:
    """An ERP invoice; issued on the first day of its period unless `issued` says otherwise."""
    n = next(_seq)
    return Invoice.objects.create(engagement=e, customer=e.customer, kind=kind, source_system="netsuite",
                                  external_id=f"inv-{n}", number=f"INV-{n}", status=status, period=period,
                                  issued_on=issued or period, currency=e.currency, total=D(total),
                                  amount_due=D(total))


def invoice_line(inv: Invoice, *, time: TimeEntry | None = None, exp: ExpenseEntry | None = None) -> InvoiceLine:
    amount = (time or exp).amount
    return InvoiceLine.objects.create(invoice=inv, description="line", unit_amount=amount, amount=amount,
                                      time_entry=time, expense=exp)


def revenue(e: Engagement, period: date, amount) -> RevenueEntry:
    return RevenueEntry.objects.create(engagement=e, period=period, amount=D(amount), currency=e.currency,
                                       source_system="netsuite", external_id=f"rev-{next(_seq)}")


# ------------------------------------------------------------------ vendor payloads


def workspace_id(e: Engagement) -> str:
    """The engagement's Kantata workspace id (Kantata ids are numbers)."""
    return str(700_000 + e.pk)


def story(engagement: Engagement | None = None, *, story_id=None, amount="25000.00", currency=None, title=None,
          workspace=None, **extra) -> dict:
    """A completed Kantata milestone story, as the PSA's API returns it."""
    sid = str(story_id or 9000 + next(_seq))
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    data = {"id": sid, "workspace_id": workspace or workspace_id(engagement), "title": title or f"Phase {sid} sign-off",
            "story_type": "milestone", "state": "completed", "price": amount,
            "currency": currency or (engagement.currency if engagement else "USD"), "due_date": "2026-11-30",
            "completed_at": now, "updated_at": now}
    data.update(extra)
    return data


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
    """The canonical payload the Kantata parser builds for an approved expense."""
    p = {"entry_type": "expense", "action": "post", "event_type": "expense.approved", "entry_id": str(entry_id),
         "source_modified_at": "2026-11-03T09:00:00.000000Z", "workspace_id": workspace, "user_id": "501",
         "person": "Jane Doe", "category": "Travel", "service_code": service_code, "date": day, "amount": amount,
         "currency": currency, "billable": True, "notes": "", "approved_at": "2026-11-03T09:00:00.000000Z",
         "engagement_code": "", "cap_decision": ""}
    p.update(extra)
    return p
