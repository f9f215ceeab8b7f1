"""Finance writes (HackSoft's services): the canonical time entries, expenses, invoices and payments as the
workflows find them in the PSA, the ERP and Stripe. Every write is idempotent (keyed by the source's id), so a
retried stage or a redelivered event changes nothing twice.

Invoice state moves only forward (apps/finance/invoicing.py `supersedes`: newer source time wins, then status
rank), so a paid invoice never goes back to open because an older event arrived late.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal, ROUND_HALF_UP

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from apps.canonical.models import Customer, Engagement, Milestone
from apps.canonical.ownership import assert_may_write
from apps.canonical.services import external_id_link

from . import invoicing
from .billable import HOURS_Q, TIME, Valuation
from .models import ExpenseEntry, Invoice, Payment, TimeEntry
from .money import MoneyError, convert, to_decimal_or_none

# ---------------------------------------------------------------- time entries and expenses


def entry_model(kind: str):
    return TimeEntry if kind == TIME else ExpenseEntry


def _approved_at(p: dict) -> datetime | None:
    value = p.get("approved_at") or p.get("source_modified_at")
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


def entry_save_priced(v: Valuation, p: dict, *, source_system: str, source_id: str, source_role: str,
                      version: str) -> int:
    """Upsert the canonical entry (one INSERT … ON CONFLICT by source), status PRICED. Returns its id."""
    common = dict(source_system=source_system, source_id=source_id, source_version=version, engagement=v.engagement,
                  person=(p.get("person") or "")[:200], service_code=(p.get("service_code") or "")[:64],
                  billable=v.billable, approved_at=_approved_at(p), status=TimeEntry.Status.PRICED, posted_at=None,
                  currency=v.currency, amount=v.amount, base_currency=v.base_currency, base_amount=v.base_amount,
                  fx_rate=v.fx_rate, fx_date=v.fx_date)
    if v.kind == TIME:
        assert_may_write("time_entry", source_role)
        obj = TimeEntry(**common, role=v.role[:100], task=(p.get("task") or "")[:200], work_date=v.entry_date,
                        hours=(Decimal(v.minutes) / 60).quantize(HOURS_Q, ROUND_HALF_UP),
                        write_off_hours=(Decimal(v.write_off_minutes) / 60).quantize(HOURS_Q, ROUND_HALF_UP),
                        rate=v.rate)
    else:
        assert_may_write("expense_entry", source_role)
        obj = ExpenseEntry(**common, category=(p.get("category") or "")[:100], incurred_on=v.entry_date,
                           spent_amount=v.spent_amount, spent_currency=v.spent_currency, markup_pct=v.markup_pct)
    model = type(obj)
    fields = [f.name for f in model._meta.concrete_fields
              if f.name not in ("id", "source_system", "source_id", "created_at")]
    [saved] = model.objects.bulk_create([obj], update_conflicts=True, unique_fields=["source_system", "source_id"],
                                        update_fields=fields)
    return saved.pk


def entry_mark_posted(*, kind: str, entry_pk: int, system: str, record_type: str, external_id: str,
                      at: datetime) -> None:
    """The ERP took the line: the canonical entry is POSTED and linked to its ERP record."""
    model = entry_model(kind)
    if model.objects.filter(pk=entry_pk).update(status=model.Status.POSTED, posted_at=at, updated_at=at):
        external_id_link(obj=model(pk=entry_pk), system=system, object_type=record_type, external_id=external_id)


def entry_mark_reversed(*, kind: str, source_system: str, source_id: str, source_role: str, at: datetime) -> None:
    """Withdrawn in the PSA: the canonical entry is REVERSED and worth nothing (its ERP line is zeroed)."""
    model = entry_model(kind)
    assert_may_write("time_entry" if model is TimeEntry else "expense_entry", source_role)
    model.objects.filter(source_system=source_system, source_id=source_id).update(
        status=model.Status.REVERSED, amount=Decimal(0), base_amount=Decimal(0), updated_at=at)


# ---------------------------------------------------------------- invoices and payments


def invoice_fields(view: dict) -> dict:
    """The canonical Invoice fields a source's view of an invoice sets (only those it carries)."""
    out = {}
    for name in ("number", "currency"):
        if view.get(name):
            out[name] = view[name]
    for name in ("total", "amount_paid", "amount_due"):
        d = to_decimal_or_none(view.get(name))
        if d is not None:
            out[name] = d
    for name in ("issued_on", "due_on"):  # the views carry days as YYYY-MM-DD
        at = invoicing.parse_time(view.get(name))
        if at is not None:
            out[name] = at.date()
    paid_at = invoicing.parse_time(view.get("paid_at"))
    if paid_at is not None:
        out["paid_at"] = paid_at
    return out


def _base_fields(total: Decimal | None, currency: str, engagement: Engagement | None, on: date | None) -> dict:
    """The total in the legal entity's base currency, with the ERP rate and its date (none when no rate)."""
    if total is None or engagement is None or not currency:
        return {}
    base = engagement.legal_entity.base_currency
    try:
        c = convert(total, currency, base, on or timezone.localdate())
    except MoneyError:
        return {"base_currency": base}
    return {"base_currency": base, "base_total": c.amount, "fx_rate": c.rate, "fx_date": c.rate_date}


def apply_invoice_state(*, source_system: str, source_role: str, external_id: str, status: str, at, view: dict,
                        customer: Customer | None = None, engagement: Engagement | None = None,
                        milestone: Milestone | None = None, extra: dict | None = None) -> tuple[Invoice, bool]:
    """Upsert the canonical invoice and move it to this state if the state supersedes the stored one.

    Found by (source system, external id), else by its milestone (one invoice per milestone); created otherwise.
    Ids and links it lacks are filled in whatever the state; amounts and status change only with a newer state.
    Returns (invoice, whether this state was applied). Runs inside the stage's commit transaction."""
    assert_may_write("invoice", source_role)
    fields = invoice_fields(view)
    state = invoicing.InvoiceState(status, at)
    with transaction.atomic():
        inv = Invoice.objects.select_for_update().filter(source_system=source_system, external_id=external_id).first()
        if inv is None and milestone is not None:
            inv = Invoice.objects.select_for_update().filter(milestone=milestone).first()
        if inv is None:
            new = Invoice(source_system=source_system, external_id=external_id, status=status, source_updated_at=at,
                          customer=customer, engagement=engagement, milestone=milestone, **fields, **(extra or {}))
            new.amount_due = fields.get("amount_due", fields.get("total", Decimal("0")))
            for k, v in _base_fields(new.total, new.currency, engagement, new.issued_on).items():
                setattr(new, k, v)
            try:
                with transaction.atomic():
                    new.save()
                return new, True
            except IntegrityError:  # created meanwhile by the other workflow's record: update that one
                inv = Invoice.objects.select_for_update().filter(
                    Q(source_system=source_system, external_id=external_id)
                    | (Q(milestone=milestone) if milestone is not None else Q(pk__in=[]))).first()
                if inv is None:
                    raise
        changed = set()
        for attr, value in (("customer", customer), ("engagement", engagement), ("milestone", milestone)):
            if value is not None and getattr(inv, f"{attr}_id") is None:
                setattr(inv, attr, value)
                changed.add(attr)
        if not inv.external_id:
            inv.source_system, inv.external_id = source_system, external_id
            changed |= {"source_system", "external_id"}
        for k, v in (extra or {}).items():
            if getattr(inv, k) != v and (k == "kind" or not getattr(inv, k)):
                setattr(inv, k, v)
                changed.add(k)
        applied = invoicing.supersedes(state, invoicing.InvoiceState(inv.status, inv.source_updated_at))
        if applied:
            for k, v in fields.items():
                if getattr(inv, k) != v:
                    setattr(inv, k, v)
                    changed.add(k)
            if inv.status != status or inv.source_updated_at != at:
                inv.status, inv.source_updated_at = status, at
                changed |= {"status", "source_updated_at"}
        else:  # an older state: only fill what is still blank (e.g. the number)
            for k in ("number", "due_on", "issued_on"):
                if k in fields and not getattr(inv, k):
                    setattr(inv, k, fields[k])
                    changed.add(k)
        if inv.base_total is None and inv.total:
            for k, v in _base_fields(inv.total, inv.currency, inv.engagement, inv.issued_on).items():
                setattr(inv, k, v)
                changed.add(k)
        if changed:
            inv.save(update_fields=[*sorted(changed), "updated_at"])
    return inv, applied


def upsert_payments(invoice: Invoice, payments: list[dict], source_system: str) -> int:
    """Payments by (source system, external id): a redelivered payment updates its row, never adds one."""
    rows = []
    for p in payments:
        amount = to_decimal_or_none(p.get("amount"))
        if amount is None or not p.get("id"):
            continue
        rows.append(Payment(invoice=invoice, source_system=source_system, external_id=str(p["id"])[:100],
                            status=p.get("status") or Payment.Status.SUCCEEDED, amount=amount,
                            currency=p.get("currency") or invoice.currency,
                            received_at=invoicing.parse_time(p.get("received_at"))))
    if rows:
        Payment.objects.bulk_create(rows, update_conflicts=True, unique_fields=["source_system", "external_id"],
                                    update_fields=["status", "amount", "received_at"])
    return len(rows)
