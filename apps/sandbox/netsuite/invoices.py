"""NetSuite invoices and customer payments (REST record service): the sandbox is the ERP that numbers, totals
and settles them.

- `PUT /services/rest/record/v1/invoice/eid:<externalId>` upserts an invoice (204 + Location), `GET …/invoice/<id>`
  or `…/eid:<externalId>` reads it, `GET …/invoice` lists. The ERP numbers the invoice (`tranId`), totals its lines
  (`item.items`, each line rounded), and keeps `amountPaid`, `amountRemaining`, `status` ({"id":
  "open"|"paidInFull", "refName": …}) and `lastModifiedDate`.
- `customerPayment` (POST, PUT eid:, GET): a payment from a customer applied to invoices (`apply.items[].doc.id`,
  `amount`); applying it reduces the invoices' amountRemaining (status "paidInFull" at 0).
- Like the SuiteScript user-event a firm deploys (afterSubmit), every saved invoice or payment is sent to Handoff
  as a signed callback (apps/sandbox/callbacks.py): `{"type": "invoice.created"|"invoice.updated"|
  "customerpayment.created", "timestamp", "data": <the record as GET returns it>}`.
"""

from __future__ import annotations

import json
import re
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from django.db import IntegrityError, transaction
from django.db.models import F
from django.http import HttpResponse

from ..callbacks import send_callback
from ..faults import error, json_response
from ..http import now_text
from ..models import SandboxObject
from .records import RECORD, find, listing, not_found, record_json

STATUS = {"open": {"id": "open", "refName": "Open"}, "paidInFull": {"id": "paidInFull", "refName": "Paid In Full"}}


def _money(value) -> Decimal | None:
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError, TypeError):
        return None
    return d if d.is_finite() else None


def _round(d: Decimal) -> Decimal:
    return d.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


# ------------------------------------------------------------------ validators


def validate_invoice(data: dict) -> tuple[str, str] | None:
    entity = (data.get("entity") or {}).get("id")
    if not entity:
        return ("Please enter value(s) for: Customer", "entity")
    if not SandboxObject.objects.filter(system="netsuite", object_type="customer", pk=int(entity)
                                        if str(entity).isdigit() else 0).exists():
        return (f"Invalid Field Value {entity} for the following field: entity", "entity")
    if not (data.get("subsidiary") or {}).get("id"):
        return ("Please enter value(s) for: Subsidiary", "subsidiary")
    if not re.fullmatch(r"[A-Z]{3}", str((data.get("currency") or {}).get("refName") or "")):
        return ("Please enter value(s) for: Currency", "currency")
    for f in ("tranDate", "dueDate"):
        if data.get(f):
            try:
                date.fromisoformat(str(data[f]))
            except ValueError:
                return (f"Invalid date value {data[f]!r} for field {f}: use YYYY-MM-DD.", f)
    items = ((data.get("item") or {}).get("items")) or []
    if not items:
        return ("You must enter at least one line item for this transaction.", "item")
    for i, line in enumerate(items):
        amount = _money(line.get("amount") if line.get("amount") is not None else line.get("rate"))
        if amount is None or amount <= 0:
            return (f"Invalid amount on line {i + 1}: {line.get('amount')!r}", f"item.items[{i}].amount")
    return None


def validate_payment(data: dict) -> tuple[str, str] | None:
    if not (data.get("customer") or {}).get("id"):
        return ("Please enter value(s) for: Customer", "customer")
    amount = _money(data.get("payment"))
    if amount is None or amount <= 0:
        return ("Please enter value(s) for: Payment Amount", "payment")
    applies = ((data.get("apply") or {}).get("items")) or []
    if not applies:
        return ("You must apply the payment to at least one invoice.", "apply")
    total = Decimal(0)
    for i, a in enumerate(applies):
        doc = str((a.get("doc") or {}).get("id") or "")
        inv = SandboxObject.objects.filter(system="netsuite", object_type="invoice",
                                           pk=int(doc) if doc.isdigit() else 0).first()
        if inv is None:
            return (f"Invalid Field Value {doc} for the following field: doc", f"apply.items[{i}].doc")
        amt = _money(a.get("amount"))
        if amt is None or amt <= 0 or amt > _money(inv.data.get("amountRemaining")):
            return (f"The amount applied to invoice {inv.data.get('tranId')} must be between 0 and its amount "
                    f"remaining ({inv.data.get('amountRemaining')}).", f"apply.items[{i}].amount")
        total += amt
    if total > amount:
        return (f"The total applied ({total}) is more than the payment ({amount}).", "payment")
    return None


VALIDATORS = {"invoice": validate_invoice, "customerPayment": validate_payment}


# ------------------------------------------------------------------ records


def _invoice_totals(data: dict) -> dict:
    """Each line rounded (amount, else quantity × rate), the total their sum; paid and remaining follow."""
    total = Decimal("0.00")
    for line in ((data.get("item") or {}).get("items")) or []:
        if line.get("amount") is not None:
            amount = _round(_money(line["amount"]))
        else:
            amount = _round(_money(line.get("quantity") or 1) * _money(line["rate"]))
        line["amount"] = str(amount)
        total += amount
    paid = _money(data.get("amountPaid")) or Decimal("0.00")
    remaining = max(Decimal("0.00"), total - paid)
    data.update(total=str(total), amountPaid=str(_round(paid)), amountRemaining=str(remaining),
                status=STATUS["paidInFull"] if remaining == 0 and total > 0 else STATUS["open"])
    return data


def upsert_invoice(external_id: str | None, data: dict, pk: int | None = None) -> tuple[SandboxObject, bool]:
    """Create or update the invoice with this external id (or internal id `pk`; neither: create)."""
    now = now_text()
    with transaction.atomic():
        obj = None
        if pk is not None:
            obj = SandboxObject.objects.select_for_update().get(system="netsuite", object_type="invoice", pk=pk)
        elif external_id:
            obj = SandboxObject.objects.select_for_update().filter(
                system="netsuite", object_type="invoice", external_key=external_id).first()
        if obj is None:
            try:
                with transaction.atomic():
                    obj = SandboxObject.objects.create(system="netsuite", object_type="invoice",
                                                       external_key=external_id, data={})
                created = True
            except IntegrityError:  # a concurrent upsert created it first: update that one
                obj = SandboxObject.objects.select_for_update().get(system="netsuite", object_type="invoice",
                                                                    external_key=external_id)
                created = False
        else:
            created = False
        merged = {**obj.data, **data}
        if created:
            merged.update(tranId=f"INV{10000 + obj.pk}", createdDate=now, amountPaid="0.00")
        merged["lastModifiedDate"] = now
        obj.data = _invoice_totals(merged)
        if not created:
            obj.writes = F("writes") + 1
        obj.save()
        obj.refresh_from_db()
    return obj, created


def apply_payment(data: dict, external_id: str | None = None) -> SandboxObject:
    """Record a customer payment and apply it to its invoices (amountPaid up, amountRemaining down)."""
    now = now_text()
    with transaction.atomic():
        if external_id:
            existing = SandboxObject.objects.filter(system="netsuite", object_type="customerPayment",
                                                    external_key=external_id).first()
            if existing is not None:
                return existing  # a payment is applied once; a re-sent one changes nothing
        payment = SandboxObject.objects.create(system="netsuite", object_type="customerPayment",
                                               external_key=external_id, data={})
        applied = []
        for a in data["apply"]["items"]:
            inv = SandboxObject.objects.select_for_update().get(system="netsuite", object_type="invoice",
                                                                pk=int(a["doc"]["id"]))
            amt = _round(_money(a["amount"]))
            inv.data["amountPaid"] = str(_round(_money(inv.data.get("amountPaid") or 0) + amt))
            inv.data["lastModifiedDate"] = now
            inv.data = _invoice_totals(inv.data)
            inv.writes = F("writes") + 1
            inv.save()
            applied.append({"doc": {"id": str(inv.pk), "refName": inv.data["tranId"]}, "apply": True,
                            "amount": str(amt), "total": inv.data["total"], "due": inv.data["amountRemaining"],
                            "refNum": inv.data["tranId"]})
        payment.data = {**data, "tranId": f"PYMT{20000 + payment.pk}", "payment": str(_round(_money(data["payment"]))),
                        "tranDate": data.get("tranDate") or date.today().isoformat(), "createdDate": now,
                        "lastModifiedDate": now, "apply": {"items": applied}}
        payment.save()
    return payment


def record(request, match):
    """An invoice or customer payment: list, read, create (POST), upsert (PUT eid:), edit an invoice (PATCH)."""
    rtype, ref = match.group(1), match.group(2)
    base = request.build_absolute_uri(f"/sandbox/netsuite/{RECORD}/{rtype}/")
    if ref is None:
        if request.method == "GET":
            return listing(request, rtype)
        if request.method != "POST":
            return error("netsuite", 405, "Method not allowed", "INVALID_REQUEST")
    if request.method == "GET":
        obj = find(rtype, ref)
        return json_response(record_json(obj)) if obj is not None else not_found(ref)
    if request.method not in ("PUT", "PATCH", "POST"):
        return error("netsuite", 405, "Method not allowed", "INVALID_REQUEST")
    try:
        data = json.loads(request.body or b"{}")
    except ValueError:
        return error("netsuite", 400, "Malformed JSON body", "INVALID_CONTENT")
    if not isinstance(data, dict):
        return error("netsuite", 400, "Body must be an object", "INVALID_CONTENT")
    if request.method == "PUT" and not (ref or "").startswith("eid:"):
        return error("netsuite", 400, "Upsert needs an external id: use eid:<externalId>", "INVALID_ID")
    external_id = ref[4:] if ref and ref.startswith("eid:") else None
    existing = None
    if request.method == "PATCH":
        if rtype != "invoice":
            return error("netsuite", 400, "A customer payment cannot be edited here: void it and enter a new one.",
                         "USER_ERROR")
        existing = find(rtype, ref)
        if existing is None:
            return not_found(ref)
        data = {**existing.data, **data}
    problem = VALIDATORS[rtype](data)
    if problem:
        return error("netsuite", 400, problem[0], "INVALID_KEY_OR_REF" if "Invalid Field Value" in problem[0]
                     else "USER_ERROR", problem[1])
    if rtype == "invoice":
        obj, created = upsert_invoice(external_id, data, pk=existing.pk if existing else None)
        send_callback("invoice.created" if created else "invoice.updated", record_json(obj))
    else:
        obj = apply_payment(data, external_id)
        send_callback("customerpayment.created", record_json(obj))
        for a in obj.data["apply"]["items"]:
            inv = SandboxObject.objects.get(system="netsuite", object_type="invoice", pk=int(a["doc"]["id"]))
            send_callback("invoice.updated", record_json(inv))
    resp = HttpResponse(status=204)
    resp["Location"] = f"{base}{obj.pk}"
    return resp


def pay_invoice(invoice_id: str | int, amount: Decimal | str | None = None, *, external_id: str | None = None,
                payment_date: str | None = None) -> SandboxObject:
    """A customer pays an invoice in the ERP (what an AR clerk records): the payment is applied and both the
    payment and the updated invoice are sent to Handoff, as the SuiteScript does."""
    inv = SandboxObject.objects.get(system="netsuite", object_type="invoice", pk=int(invoice_id))
    amt = _money(amount) if amount is not None else _money(inv.data["amountRemaining"])
    payment = apply_payment({"customer": inv.data["entity"], "currency": inv.data.get("currency"),
                             "payment": str(amt), "tranDate": payment_date or date.today().isoformat(),
                             "apply": {"items": [{"doc": {"id": str(inv.pk)}, "apply": True, "amount": str(amt)}]}},
                            external_id)
    send_callback("customerpayment.created", record_json(payment))
    inv.refresh_from_db()
    send_callback("invoice.updated", record_json(inv))
    return payment
