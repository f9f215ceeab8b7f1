"""Invoices and payments back to the CRM: what the ERP or Stripe says about an invoice (posted, paid, payment
failed, disputed, voided) becomes the canonical Invoice and Payment, and the invoice's status, the open amount
and the days overdue are written to the CRM opportunity (HubSpot deal / Salesforce Opportunity) and account
(HubSpot company / Salesforce Account) the engagement came from.

Sources (one record per source object): Stripe events (`invoice:<in_…>`, `dispute:<dp_…>`, see
apps/connectors/stripe/inbound.py) and NetSuite callbacks (`invoice:<id>`, `payment:<id>`, see
apps/connectors/netsuite/inbound.py).

Stages:
- fetch: what the event does not carry is read from the source — a dispute's invoice (Stripe invoice payments by
  payment intent, then the invoice), a paid Stripe invoice's payments, the invoices a NetSuite payment was applied
  to (their current state). Read-only.
- apply: the canonical Invoice and its Payments are written by apps/finance/services.py `apply_invoice_state` /
  `upsert_payments` (by source id; the state moves only forward), so duplicates and out-of-order deliveries are
  harmless.
- crm: the canonical state (not the event) is written to the CRM: the opportunity gets this invoice's number and
  status plus the engagement's open amount, longest delay in days and payment status; the account gets the
  customer's. After writing, the state is read again and written once more if another record changed it
  meanwhile, so concurrent records for one engagement end with the CRM showing the latest state.
`reopen_on_update`: a newer state of an already-written invoice (paid after finalized) runs the record again; one
that arrives while the record is being worked is taken in by the crm stage before it finishes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.canonical.models import Customer, Engagement, ExternalId, Milestone
from apps.canonical.services import object_by_external_id
from apps.connectors.hubspot import mapping as hubspot_mapping
from apps.connectors.netsuite.client import record_path
from apps.connectors.salesforce import mapping as salesforce_mapping
from apps.finance import invoicing
from apps.finance.models import Invoice
from apps.finance.money import amount_problem, to_decimal_or_none
from apps.finance.services import apply_invoice_state, upsert_payments

from .base import Hold, Problem, Refusal, Stage, Workflow

# every hold is finance ops' (base.ADMIN_TEAM adds Handoff's own failures and outages)
OWNER_TEAM: dict[str, str] = {}
DEFAULT_TEAM = "finance_ops"
PRIORITY = 1  # money: invoices and payments outrank project set-up

CRM_MAPPING = {"hubspot": hubspot_mapping, "salesforce": salesforce_mapping}  # what each CRM shows of an invoice
CRM_KINDS = tuple(CRM_MAPPING)
SOURCE_SYSTEM = {"stripe": "stripe", "netsuite": "netsuite"}
FIX_FIELDS = ["engagement_code"]
FIELD_LABELS = {"engagement_code": "engagement (code) this invoice belongs to"}
SOURCE_REFUSAL = Refusal("{system} refused a read: {message}", not_found="{system} has no such object: {message}")
CRM_REFUSAL = Refusal("The CRM refused the invoice status write-back: {message}.")


# ------------------------------------------------------------------ resolving an invoice to Handoff's objects


@dataclass
class Resolved:
    customer: Customer | None
    engagement: Engagement | None
    milestone: Milestone | None


def resolve(source_system: str, view: dict, engagement_code: str = "") -> Resolved:
    """Which customer, engagement and milestone an invoice belongs to: a known invoice's links, its milestone
    (Stripe metadata / NetSuite externalId HO-MS-<story>), an engagement code (a person's fix, or Stripe metadata),
    its ERP project (job), then its customer (Handoff's key, or the source's customer id)."""
    known = (Invoice.objects.select_related("customer", "engagement__legal_entity", "milestone")
             .filter(source_system=source_system, external_id=view.get("id") or "").first())
    if known is not None and known.customer_id:
        return Resolved(known.customer, known.engagement, known.milestone)
    milestone = None
    if view.get("milestone_ref"):
        milestone = (Milestone.objects.select_related("engagement__customer", "engagement__legal_entity")
                     .filter(source_key=view["milestone_ref"]).first())
    engagement = milestone.engagement if milestone else None
    for code in (engagement_code, view.get("engagement_ref")):
        if engagement is None and code:
            engagement = Engagement.objects.select_related("customer", "legal_entity").filter(code=code).first()
    if engagement is None and view.get("project_ref"):
        engagement = object_by_external_id(model=Engagement, system=source_system, object_type="job",
                                           external_id=view["project_ref"])
    customer = engagement.customer if engagement else None
    if customer is None and view.get("customer_key"):
        try:
            customer = Customer.objects.filter(key=uuid.UUID(view["customer_key"])).first()
        except ValueError:
            customer = None
    if customer is None and view.get("customer_ref"):
        customer = object_by_external_id(model=Customer, system=source_system, object_type="customer",
                                         external_id=view["customer_ref"])
    return Resolved(customer, engagement, milestone)


# ------------------------------------------------------------------ rules


def validate(payload: dict, *, source_kind: str = "", ref=None) -> list[Problem]:
    """The event's invoices must be readable, and each must belong to a customer Handoff knows."""
    problems: list[Problem] = []
    source = SOURCE_SYSTEM.get(payload.get("source") or source_kind, source_kind)
    for view in payload.get("invoices") or []:
        label = view.get("number") or view.get("id") or "?"
        if not view.get("id") or not view.get("currency"):
            problems.append(Problem("payload_schema_invalid", f"Invoice {label} has no id or currency.", []))
            continue
        if view.get("total") and to_decimal_or_none(view["total"]) is None:
            problems.append(Problem("payload_schema_invalid", f"Invoice {label} has no valid total.", []))
        for name in ("total", "amount_paid", "amount_due"):
            if view.get(name) not in (None, "") and (why := amount_problem(view[name], view["currency"])):
                problems.append(Problem("payload_schema_invalid",
                                        f"Invoice {label}: {name} “{view[name]}” {why}.", [name]))
        code = (payload.get("engagement_code") or "").strip()
        if code and not Engagement.objects.filter(code=code).exists():
            problems.append(Problem("unknown_customer", f"There is no engagement {code}.", ["engagement_code"]))
            continue
        if resolve(source, view, code).customer is None:
            problems.append(Problem(
                "unknown_customer",
                f"{source.title()} invoice {label} belongs to a customer Handoff does not know "
                f"({source} customer {view.get('customer_ref') or '?'}): name the engagement it was billed for.",
                ["engagement_code"]))
    for pay in payload.get("payments") or []:
        if why := amount_problem(pay.get("amount"), pay.get("currency") or "", may_be_negative=False):
            problems.append(Problem("payload_schema_invalid", f"Payment {pay.get('id') or '?'}: amount "
                                    f"“{pay.get('amount')}” {why}.", ["amount"]))
    return problems


def summary(payload: dict) -> dict:
    invoices = payload.get("invoices") or []
    if invoices:
        v = invoices[0]
        return {"title": f"{payload.get('source', '').title()} invoice {v.get('number') or v.get('id')} "
                         f"{(payload.get('status') or v.get('status') or '').replace('_', ' ')}".strip(),
                "amount": v.get("total"), "currency": v.get("currency")}
    if payload.get("dispute"):
        d = payload["dispute"]
        return {"title": f"Stripe dispute {d.get('id')}", "amount": d.get("amount"), "currency": d.get("currency")}
    pays = payload.get("payments") or []
    total = sum((to_decimal_or_none(p.get("amount")) or Decimal(0) for p in pays), Decimal(0))
    return {"title": f"{payload.get('source', '').title()} payment {payload.get('object_id', '')}",
            "amount": total if pays else None, "currency": pays[0].get("currency") if pays else ""}


# ------------------------------------------------------------------ stages


def stage_fetch(ctx) -> None:
    """Read from the source what the event does not carry (read-only, so it may run any number of times)."""
    from apps.connectors.netsuite import mapping as netsuite_mapping
    from apps.connectors.stripe import mapping as stripe_mapping

    p = ctx.payload
    fetch = p.get("fetch") or ""
    if not fetch:
        return
    client = ctx.client_for(ctx.source)
    with SOURCE_REFUSAL.as_hold():
        if fetch == "dispute_invoice":
            d = p.get("dispute") or {}
            invoice_id = (client.invoice_for_payment_intent(d["payment_intent"]) if d.get("payment_intent")
                          else client.invoice_for_charge(d["charge"]) if d.get("charge") else None)
            if not invoice_id:
                ctx.context["note"] = "the disputed charge paid no invoice: nothing to write back"
                p["invoices"] = []
                return
            inv = client.retrieve_invoice(invoice_id)
            p["invoices"] = [stripe_mapping.invoice_view(inv, "disputed")]
        elif fetch == "payments":
            view = p["invoices"][0]
            p["payments"] = [{
                "id": (ip.get("payment") or {}).get("payment_intent") or ip["id"], "invoice_id": view["id"],
                "amount": stripe_mapping.money(ip.get("amount_paid"), view["currency"]),
                "currency": view["currency"], "status": "succeeded" if ip.get("status") == "paid" else "failed",
                "received_at": invoicing.utc_text(invoicing.parse_time(
                    (ip.get("status_transitions") or {}).get("paid_at") or ip.get("created"))),
            } for ip in client.invoice_payments(view["id"]) if ip.get("status") in ("paid", "canceled")]
        elif fetch == "invoices":
            views = []
            for invoice_id in dict.fromkeys(x["invoice_id"] for x in p.get("payments") or []):
                rec = client.request("GET", record_path("invoice", invoice_id),
                                     summary=f"get invoice {invoice_id}").json()
                view = netsuite_mapping.invoice_view(rec)
                at = invoicing.parse_time(rec.get("lastModifiedDate"))
                view["state_at"] = invoicing.utc_text(at) if at else p.get("state_at", "")
                views.append(view)
            p["invoices"] = views


def _plan(ctx) -> list:
    """What the payload says about each invoice, resolved to Handoff's objects (Hold when it cannot be)."""
    problems = validate(ctx.payload, source_kind=ctx.source.kind)
    if problems:
        raise Hold(problems)
    p = ctx.payload
    source = SOURCE_SYSTEM.get(p.get("source") or ctx.source.kind, ctx.source.kind)
    plan = []
    for view in p.get("invoices") or []:
        r = resolve(source, view, (p.get("engagement_code") or "").strip())
        at = invoicing.parse_time(view.get("state_at") or p.get("state_at")) or timezone.now()
        status = view.get("status") or p.get("status") or "open"
        payments = [x for x in p.get("payments") or [] if x.get("invoice_id") == view["id"]]
        plan.append((source, view, r, at, status, payments))
    return plan


def _apply(ctx, plan: list) -> None:
    ids = []
    for source, view, r, at, status, payments in plan:
        inv, _ = apply_invoice_state(source_system=source, source_role=ctx.source.role, external_id=view["id"],
                                     status=status, at=at, view=view, customer=r.customer, engagement=r.engagement,
                                     milestone=r.milestone)
        upsert_payments(inv, payments, source)
        ids.append(inv.pk)
    ctx.context["invoice_ids"] = ids


def stage_apply(ctx) -> None:
    plan = _plan(ctx)
    for _source, view, r, *_rest in plan[:1]:  # what a person may search the record by
        ctx.context["invoice_number"] = view.get("number") or ""
        ctx.context["engagement_code"] = r.engagement.code if r.engagement else ""
    ctx.on_commit(lambda: _apply(ctx, plan))


@dataclass
class CrmConnections:
    """The enabled CRM connections by kind, loaded once per batch."""

    by_kind: dict

    @classmethod
    def load(cls) -> "CrmConnections":
        from apps.sync.models import Connection

        out = {}
        for c in Connection.objects.filter(kind__in=CRM_KINDS, enabled=True).order_by("id"):
            out.setdefault(c.kind, c)
        return cls(out)


def _views(filter_q) -> list[invoicing.InvoiceView]:
    return [invoicing.InvoiceView(s, c, a, d) for s, c, a, d in
            Invoice.objects.filter(filter_q).values_list("status", "currency", "amount_due", "due_on")]


def crm_values(invoice_ids: list[int], today: date) -> dict:
    """What each CRM object linked to these invoices' engagements and customers should show now:
    {(system, object_type, external id): properties}."""
    invoices = list(Invoice.objects.select_related("engagement", "customer").filter(pk__in=invoice_ids)
                    .order_by("pk"))
    eng = {i.engagement_id: i for i in invoices if i.engagement_id}
    cust = {i.customer_id: i for i in invoices if i.customer_id}
    ct_e, ct_c = ContentType.objects.get_for_model(Engagement), ContentType.objects.get_for_model(Customer)
    links = list(ExternalId.objects.filter(
        Q(content_type=ct_e, object_id__in=list(eng), object_type="opportunity")
        | Q(content_type=ct_c, object_id__in=list(cust), object_type="account"), system__in=CRM_KINDS))
    out = {}
    for link in links:
        if link.content_type_id == ct_e.pk:
            inv = eng[link.object_id]
            st = invoicing.standing(_views(Q(engagement_id=link.object_id)), today)
            currency = inv.engagement.currency
            props = CRM_MAPPING[link.system].opportunity_invoice(inv, st, currency)
        else:
            inv = cust[link.object_id]
            st = invoicing.standing(_views(Q(customer_id=link.object_id)), today)
            currency = inv.customer.currency or inv.currency
            props = CRM_MAPPING[link.system].account_standing(st, currency)
        out[(link.system, link.object_type, link.external_id)] = props
    return out


def _write(ctx, key, props) -> None:
    system, object_type, external_id = key
    conn = ctx.reference(CrmConnections).by_kind.get(system)
    if conn is None:
        raise Hold([Problem("downstream_validation", f"No enabled {system} connection to write the invoice to.", [],
                            system, "")])
    client = ctx.client_for(conn)
    if system == "hubspot":
        (client.update_deal if object_type == "opportunity" else client.update_company)(external_id, props)
    else:
        (client.update_opportunity if object_type == "opportunity" else client.update_account)(external_id, props)


def _write_crm(ctx) -> None:
    ids = ctx.context.get("invoice_ids") or []
    if not ids:
        return
    today = timezone.localdate()
    written: dict = {}
    with CRM_REFUSAL.as_hold():
        for _ in range(3):  # write, read back, write what changed meanwhile (at most twice more)
            values = crm_values(ids, today)
            todo = {k: v for k, v in values.items() if written.get(k) != v}
            if not todo:
                break
            for key, props in todo.items():
                _write(ctx, key, props)
                written[key] = props
    if not written and not ctx.context.get("note"):
        ctx.context["note"] = "no CRM opportunity or account is linked to this invoice's engagement or customer"
    ctx.context["crm_written"] = sorted({*ctx.context.get("crm_written", []),
                                         *(f"{s}:{t}:{i}" for (s, t, i) in written)})


def newer_linked_payload(ctx) -> dict | None:
    """The payload of an event for this record that is newer than the one being processed, if any.

    An event that arrives while its record is being worked waits in the inbox and re-runs the record once it is
    done (apps/sync/intake.py); one that arrives while the record is held after a person edited it is linked to
    the record without re-running it, so that person's fix is not thrown away. When the record is resubmitted,
    this picks that newer state up (say invoice.paid that arrived while invoice.finalized was held)."""
    from apps.sync.models import InboundEvent

    current = str(ctx.payload.get("source_modified_at") or "")
    payloads = [pl for pl in InboundEvent.objects.filter(record_id=ctx.record.pk, status="processed")
                .values_list("payload", flat=True) if str((pl or {}).get("source_modified_at") or "") > current]
    return max(payloads, key=lambda pl: str(pl["source_modified_at"])) if payloads else None


def stage_crm(ctx) -> None:
    """Write the canonical state to the CRM; then take in any newer event that arrived meanwhile (read, applied
    and written here at once, so the record ends with the newest state)."""
    _write_crm(ctx)
    for _ in range(3):
        newer = newer_linked_payload(ctx)
        if newer is None:
            break
        kept = {k: ctx.payload[k] for k in FIX_FIELDS if ctx.payload.get(k)}  # a person's fix stays
        ctx.payload.clear()
        ctx.payload.update({**newer, **kept})
        ctx.context["source_modified_at"] = newer["source_modified_at"]
        stage_fetch(ctx)
        plan = _plan(ctx)
        with transaction.atomic():  # monotonic and idempotent: safe to commit ahead of the stage
            _apply(ctx, plan)
        _write_crm(ctx)


WORKFLOW = Workflow(
    name="invoice_payment_to_crm",
    label="Invoices and payments to CRM",
    stages=[
        Stage("fetch", "Read from source", stage_fetch),
        Stage("apply", "Invoice and payment", stage_apply),
        Stage("crm", "Status to CRM", stage_crm, "crm"),
    ],
    validate=validate,
    owner_teams=OWNER_TEAM,
    default_team=DEFAULT_TEAM,
    base_priority=PRIORITY,
    fix_fields=FIX_FIELDS,
    first_stage_on_restart="fetch",
    field_labels=FIELD_LABELS,
    summary=summary,
    reopen_on_update=True,
)
