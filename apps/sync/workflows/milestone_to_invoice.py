"""Milestone to invoice: a milestone completed in the PSA (Kantata story.completed, apps/connectors/
kantata/inbound.py) is checked for invoice readiness, invoiced in the ERP (NetSuite) or in Stripe (when the
engagement bills there), and the invoice's id and number are recorded on the canonical Invoice (one per milestone).

Stages:
- validate: the readiness rules (apps/finance/invoicing.py `readiness`: contract bills by milestone, billing
  schedule present, one currency, amount within the remaining contract value, customer active in the ERP, an
  exchange rate to the legal entity's base currency). Every failing rule holds the record before anything is
  written downstream. Then the canonical Milestone is upserted (PSA-owned) as completed.
- erp_invoice (ERP channel): NetSuite `PUT …/invoice/eid:HO-MS-<story id>` — an upsert by external id, so a
  retry, a redelivered callback or a lost response never makes a second invoice — then a GET for its number.
- billing_invoice (Stripe channel): the Stripe customer is found by metadata or created with an Idempotency-Key;
  the draft invoice, its line and the finalization each carry an Idempotency-Key derived from the milestone
  (`handoff-ms-<story id>-invoice|item|finalize`), and each step is checkpointed in the record's context.
- record: the canonical Invoice (external id, number, amounts in engagement and base currency with the rate and
  its date) is upserted through the same state rule as the invoice callbacks, and the milestone becomes invoiced.

Amounts: the milestone's amount is one invoice line, rounded once to the currency's minor unit, half up
(apps/finance/money.py); the invoice date is the day Handoff validated the milestone; the due date follows the
customer's payment terms.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from django.contrib.contenttypes.models import ContentType
from django.db.models import Sum
from django.utils import timezone

from apps.canonical import normalise
from apps.canonical.models import Customer, Engagement, ExternalId, Milestone
from apps.canonical.services import (external_id_get, external_id_link, milestone_complete, milestone_mark_invoiced,
                                     object_by_external_id)
from apps.connectors.base import DownstreamError
from apps.core.dates import parse_date
from apps.finance import invoicing
from apps.finance.models import Invoice
from apps.finance.money import find_rate, month_start, round_money, to_decimal_or_none
from apps.finance.services import apply_invoice_state

from .base import Hold, Problem, Refusal, Stage, Workflow, problems_from

# whose queue a held milestone lands in (base.ADMIN_TEAM adds Handoff's own failures and outages)
OWNER_TEAM = {  # the PSA's milestone or its project link must be corrected
    "unknown_project": "pmo", "currency_mismatch": "pmo", "payload_schema_invalid": "pmo", "source_not_found": "pmo",
}
DEFAULT_TEAM = "finance_ops"  # every readiness rule, and the ERP's or Stripe's refusal
PRIORITY = 1  # an invoice posting: money

FIX_FIELDS = ["amount", "currency", "workspace_id"]
FIELD_LABELS = {
    "amount": "milestone amount", "currency": "milestone currency", "workspace_id": "Kantata project (workspace) id",
    "engagement.contract_type": "contract type", "engagement.billing_schedule": "billing schedule",
}
# Stripe's / NetSuite's refusal (their field → the canonical field a person fixes)
INVOICE_REFUSAL = Refusal("{System} refused to {what}: {message} (field: {field}).", "{System} refused to {what}: "
                          "{message}.", fields={"amount": "amount", "currency": "currency", "item": "amount",
                                                "unit_amount": "amount"})


def invoice_key(story_id: str) -> str:
    """The milestone's invoice identity downstream: NetSuite external id / Stripe Idempotency-Key prefix."""
    return f"HO-MS-{story_id}"


def find_engagement(workspace_id: str) -> Engagement | None:
    if not workspace_id:
        return None
    e = object_by_external_id(model=Engagement, system="kantata", object_type="workspace", external_id=workspace_id)
    if e is None:
        return None
    return Engagement.objects.select_related("customer__payment_terms", "legal_entity").get(pk=e.pk)


def committed_amount(engagement: Engagement, story_id: str) -> Decimal:
    """What this engagement has already billed or is billing, other than this milestone: invoices not voided,
    plus other completed milestones that have no invoice yet."""
    invoiced = (Invoice.objects.filter(engagement=engagement).exclude(status="void")
                .exclude(milestone__source_key=story_id, milestone__engagement=engagement)
                .aggregate(s=Sum("total"))["s"] or Decimal(0))
    in_flight = (Milestone.objects.filter(engagement=engagement, status=Milestone.Status.COMPLETED,
                                          invoice__isnull=True).exclude(source_key=story_id)
                 .aggregate(s=Sum("amount"))["s"] or Decimal(0))
    return invoiced + in_flight


def invoice_date(payload: dict) -> date:
    return timezone.localdate()


def facts(payload: dict, *, on: date | None = None) -> tuple[invoicing.MilestoneFacts, invoicing.EngagementFacts | None,
                                                             Engagement | None]:
    """The facts the readiness rules need, gathered from the canonical objects."""
    ms = invoicing.MilestoneFacts(name=payload.get("title") or f"story {payload.get('story_id')}",
                                  amount=to_decimal_or_none(payload.get("amount")),
                                  currency=(payload.get("currency") or "").strip().upper(),
                                  workspace_id=str(payload.get("workspace_id") or ""))
    e = find_engagement(ms.workspace_id)
    if e is None:
        return ms, None, None
    in_erp = ExternalId.objects.filter(content_type=ContentType.objects.get_for_model(Customer),
                                       object_id=e.customer_id, system="netsuite", object_type="customer").exists()
    base = e.legal_entity.base_currency
    rate_found = e.currency == base or find_rate(e.currency, base, on or timezone.localdate()) is not None
    ef = invoicing.EngagementFacts(
        code=e.code, contract_type=e.contract_type, billing_schedule=e.billing_schedule,
        contract_value=e.contract_value, currency=e.currency,
        committed=committed_amount(e, str(payload.get("story_id") or "")), customer_name=e.customer.name,
        customer_in_erp=in_erp, base_currency=base, rate_found=rate_found)
    return ms, ef, e


def _problems(ms: invoicing.MilestoneFacts, ef: invoicing.EngagementFacts | None) -> list[Problem]:
    problems = problems_from(invoicing.readiness(ms, ef))
    if len(ms.currency) == 3 and ms.currency.isalpha() and not normalise.is_currency(ms.currency):
        problems.insert(0, Problem("payload_schema_invalid",
                                   f"Currency “{ms.currency}” is not an ISO 4217 currency.", ["currency"]))
    return problems


def validate(payload: dict, *, source_kind: str = "", ref=None) -> list[Problem]:
    """Every readiness rule (apps/finance/invoicing.py) for this completed milestone."""
    ms, ef, _ = facts(payload)
    return _problems(ms, ef)


def summary(payload: dict) -> dict:
    title = payload.get("title") or f"Milestone {payload.get('story_id', '')}"
    code = payload.get("engagement_code")
    return {"title": f"{code} · {title}" if code else title, "amount": payload.get("amount"),
            "currency": payload.get("currency")}


# ------------------------------------------------------------------ stages


def stage_validate(ctx) -> None:
    p = ctx.payload
    on = invoice_date(p)
    ms, ef, e = facts(p, on=on)
    problems = _problems(ms, ef)
    if problems:
        raise Hold(problems)
    amount = round_money(ms.amount, e.currency)
    terms_days = e.customer.payment_terms.days if e.customer.payment_terms else 30
    story_id = str(p["story_id"])
    p["engagement_code"] = e.code
    ctx.context.update(engagement_id=e.pk, customer_id=e.customer_id, channel=e.billing_channel,
                       invoice_date=on.isoformat(), due_date=(on + timedelta(days=terms_days)).isoformat(),
                       terms_days=terms_days, amount=str(amount), currency=e.currency, engagement_code=e.code)

    def apply():
        fields = {"name": ms.name[:200], "amount": amount, "currency": ms.currency,
                  "due_date": parse_date(p.get("due_date")),
                  "completed_at": invoicing.parse_time(p.get("completed_at")) or timezone.now()}
        ctx.context["milestone_id"] = milestone_complete(engagement=e, source_key=story_id, fields=fields,
                                                         source_role="psa").pk

    ctx.on_commit(apply)




def _objects(ctx) -> tuple[Milestone, Engagement, Customer]:
    ms = Milestone.objects.select_related("engagement__customer", "engagement__legal_entity").get(
        pk=ctx.context["milestone_id"])
    return ms, ms.engagement, ms.engagement.customer


def stage_erp_invoice(ctx) -> None:
    """NetSuite invoice, upserted by the milestone's external id, then read back for its number and state."""
    if ctx.context.get("channel") != Engagement.BillingChannel.ERP:
        return
    from apps.connectors.netsuite.mapping import invoice_view

    ms, e, customer = _objects(ctx)
    c = ctx.context
    erp_customer = external_id_get(obj=customer, system="netsuite", object_type="customer")
    job = external_id_get(obj=e, system="netsuite", object_type="job")
    eid = invoice_key(ms.source_key)
    fields = {
        "entity": {"id": erp_customer},
        "subsidiary": {"id": e.legal_entity.erp_subsidiary_id},
        "currency": {"refName": e.currency},
        "tranDate": c["invoice_date"],
        "dueDate": c["due_date"],
        "otherRefNum": e.code,
        "memo": f"{e.code} · {ms.name}"[:999],
        "item": {"items": [{"description": f"Milestone: {ms.name}"[:999], "quantity": 1, "rate": c["amount"],
                            "amount": c["amount"]}]},
    }
    if job:
        fields["job"] = {"id": job}
    client = ctx.client_for_role("erp")
    with INVOICE_REFUSAL.as_hold(what="create the invoice"):
        internal_id = client.upsert("invoice", eid, fields)
        record = client.get_by_external_id("invoice", eid)
    if record is None:
        raise DownstreamError(f"NetSuite does not return invoice {eid} it just accepted", permanent=False,
                              system=client.system)
    view = invoice_view(record)
    at = invoicing.parse_time(record.get("lastModifiedDate")) or timezone.now()
    c.update(invoice_system="netsuite", invoice_id=internal_id, invoice_number=view["number"], invoice_view=view,
             invoice_state_at=invoicing.utc_text(at))


def stage_billing_invoice(ctx) -> None:
    """Stripe invoice: customer found or created, then draft → line → finalize, each step once."""
    if ctx.context.get("channel") != Engagement.BillingChannel.STRIPE:
        return
    from apps.connectors.stripe.mapping import STRIPE_STATUS, invoice_view

    ms, e, customer = _objects(ctx)
    c = ctx.context
    client = ctx.client_for_role("billing")
    with INVOICE_REFUSAL.as_hold(what="create the invoice"):
        if not c.get("stripe_customer_id"):
            linked = external_id_get(obj=customer, system="stripe", object_type="customer")
            c["stripe_customer_id"] = linked or client.find_or_create_customer(
                customer_key=str(customer.key), name=customer.name)["id"]
        inv = client.invoice_milestone(
            key=f"handoff-ms-{ms.source_key}", customer_id=c["stripe_customer_id"], currency=e.currency,
            amount=Decimal(c["amount"]), description=f"{e.code} · Milestone: {ms.name}",
            days_until_due=c.get("terms_days", 30),
            metadata={"handoff_milestone": ms.source_key, "handoff_engagement": e.code,
                      "handoff_customer_key": str(customer.key)},
            context=c)
    status = STRIPE_STATUS.get(inv.get("status"), "open")
    view = invoice_view(inv, status)
    at = invoicing.parse_time((inv.get("status_transitions") or {}).get("finalized_at")) or timezone.now()
    stripe_customer = c["stripe_customer_id"]
    c.update(invoice_system="stripe", invoice_id=inv["id"], invoice_number=view["number"], invoice_view=view,
             invoice_state_at=invoicing.utc_text(at))
    ctx.on_commit(lambda: external_id_link(obj=customer, system="stripe", object_type="customer",
                                           external_id=stripe_customer))


def stage_record(ctx) -> None:
    """The canonical invoice for the milestone, with its downstream id and number; the milestone is invoiced."""
    c = ctx.context
    ms, e, customer = _objects(ctx)
    source = c["invoice_system"]
    view = dict(c["invoice_view"])
    issued = parse_date(c["invoice_date"])
    if not view.get("issued_on"):
        view["issued_on"] = c["invoice_date"]
    if not view.get("due_on"):
        view["due_on"] = c["due_date"]

    def apply():
        inv, _ = apply_invoice_state(
            source_system=source, source_role="erp" if source == "netsuite" else "billing",
            external_id=c["invoice_id"], status=view["status"], at=invoicing.parse_time(c["invoice_state_at"]),
            view=view, customer=customer, engagement=e, milestone=ms,
            extra={"kind": Invoice.Kind.MILESTONE if e.contract_type == "milestone" else Invoice.Kind.FIXED_FEE,
                   "period": month_start(issued), "idempotency_key": invoice_key(ms.source_key)})
        milestone_mark_invoiced(milestone_pk=ms.pk)
        c["canonical_invoice_id"] = inv.pk

    ctx.on_commit(apply)


WORKFLOW = Workflow(
    name="milestone_to_invoice",
    label="Milestone to invoice",
    stages=[
        Stage("validate", "Readiness check", stage_validate),
        Stage("erp_invoice", "Invoice in ERP", stage_erp_invoice, "erp"),
        Stage("billing_invoice", "Invoice in Stripe", stage_billing_invoice, "billing"),
        Stage("record", "Invoice recorded", stage_record),
    ],
    validate=validate,
    owner_teams=OWNER_TEAM,
    default_team=DEFAULT_TEAM,
    base_priority=PRIORITY,
    fix_fields=FIX_FIELDS,
    first_stage_on_restart="validate",
    field_labels=FIELD_LABELS,
    summary=summary,
)
