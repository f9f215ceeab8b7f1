"""Stripe invoice items and invoices: create, list, search, read, update, finalize, void and mark uncollectible
(`/v1/invoiceitems…`, `/v1/invoices…`). A handler's state changes go to `outbox` as (event type, object), emitted
as webhooks once the request has committed (views.py)."""

from __future__ import annotations

import json
import re

from ..models import SandboxObject
from .api import (ApiError, bool_param, create_object, customer_of, get_object, int_param, listing, metadata_param,
                 new_id, now, respond, save_object, search_view)


def _currency(params: dict, required: bool = True) -> str | None:
    cur = str(params.get("currency") or "").lower()
    if not cur:
        if required:
            raise ApiError(400, "Missing required param: currency.", code="parameter_missing", param="currency")
        return None
    if not re.fullmatch(r"[a-z]{3}", cur):
        raise ApiError(400, f"Invalid currency: {cur}. Stripe currently supports these currencies: usd, eur, gbp, "
                            f"cad, aud, chf, jpy, sek, inr, sgd, …", code="parameter_invalid", param="currency")
    return cur


def _line(item: dict) -> dict:
    return {"id": "il_" + item["id"][3:], "object": "line_item", "amount": item["amount"],
            "currency": item["currency"], "description": item["description"], "discount_amounts": [],
            "discountable": True, "discounts": [], "invoice": item["invoice"], "livemode": False,
            "metadata": item["metadata"],
            "parent": {"type": "invoice_item_details", "invoice_item_details": {"invoice_item": item["id"]},
                       "subscription_item_details": None},
            "period": item["period"], "pretax_credit_amounts": [], "pricing": None, "quantity": item["quantity"],
            "taxes": []}


def _recompute(inv: dict, items: list[dict]) -> None:
    """Totals from the lines (Stripe rounds each line; the total is their sum)."""
    lines = [_line(i) for i in items]
    total = sum(i["amount"] for i in items)
    inv["lines"] = {"object": "list", "data": lines, "has_more": False, "total_count": len(lines),
                    "url": f"/v1/invoices/{inv['id']}/lines"}
    inv["subtotal"] = inv["subtotal_excluding_tax"] = inv["total"] = inv["total_excluding_tax"] = total
    inv["amount_due"] = total
    inv["amount_remaining"] = max(0, total - inv["amount_paid"])


def _items_of(invoice_id: str) -> list[dict]:
    return [o.data for o in SandboxObject.objects.filter(system="stripe", object_type="invoiceitem",
                                                         data__invoice=invoice_id).order_by("pk")]


def invoiceitems(request, params, outbox, m):
    if request.method == "GET":
        return listing("invoiceitem", params, ("customer", "invoice"), "/v1/invoiceitems")
    cust = customer_of(params)
    cur = _currency(params)
    quantity = int_param(params, "quantity", default=1)
    if "amount" in params:
        amount = int_param(params, "amount")
        unit = amount // quantity if quantity else amount
    else:
        unit = int_param(params, "unit_amount", required=True)
        amount = unit * quantity
    if amount is None:
        raise ApiError(400, "Missing required param: amount.", code="parameter_missing", param="amount")
    invoice_id = params.get("invoice") or None
    inv = None
    if invoice_id:
        inv = get_object("invoice", invoice_id, lock=True)
        if inv.data["status"] != "draft":
            raise ApiError(400, f"You can only add invoice items to draft invoices; invoice {invoice_id} is "
                                f"{inv.data['status']}.", code="invoice_not_editable", param="invoice")
        if inv.data["currency"] != cur:
            raise ApiError(400, f"The currency of the invoice item ({cur}) must match the invoice's currency "
                                f"({inv.data['currency']}).", code="parameter_invalid", param="currency")
        if inv.data["customer"] != cust.external_key:
            raise ApiError(400, "The invoice item's customer must be the invoice's customer.",
                           code="parameter_invalid", param="customer")
    ts = now()
    data = {"id": new_id("invoiceitem"), "object": "invoiceitem", "amount": amount, "currency": cur,
            "customer": cust.external_key, "date": ts, "description": params.get("description") or None,
            "discountable": True, "discounts": [], "invoice": invoice_id, "livemode": False,
            "metadata": metadata_param(params), "parent": None, "period": {"start": ts, "end": ts}, "pricing": None,
            "proration": False, "quantity": quantity, "tax_rates": [], "test_clock": None,
            "unit_amount_decimal": str(unit)}
    create_object("invoiceitem", data)
    if inv is not None:
        _recompute(inv.data, _items_of(invoice_id))
        save_object(inv)
    return respond(data)


def invoiceitem(request, params, outbox, m):
    return respond(get_object("invoiceitem", m.group(1)).data)


def invoices(request, params, outbox, m):
    if request.method == "GET":
        return listing("invoice", params, ("customer", "status"), "/v1/invoices")
    cust = customer_of(params)
    method = params.get("collection_method") or "charge_automatically"
    if method not in ("charge_automatically", "send_invoice"):
        raise ApiError(400, f"Invalid collection_method: {method}", code="parameter_invalid",
                       param="collection_method")
    days = int_param(params, "days_until_due")
    due_date = int_param(params, "due_date")
    if method == "send_invoice" and days is None and due_date is None:
        raise ApiError(400, "Missing required param: days_until_due.", code="parameter_missing",
                       param="days_until_due")
    behaviour = params.get("pending_invoice_items_behavior") or "exclude"
    cur = _currency(params, required=False) or cust.data.get("currency") or "usd"
    ts = now()
    data = {"id": new_id("invoice"), "object": "invoice", "account_country": "US",
            "account_name": "Handoff Consulting (Stripe sandbox)", "amount_due": 0, "amount_overpaid": 0,
            "amount_paid": 0, "amount_remaining": 0, "amount_shipping": 0, "attempt_count": 0, "attempted": False,
            "auto_advance": bool_param(params, "auto_advance", False), "automatic_tax": {"enabled": False,
                                                                                   "liability": None,
                                                                                   "status": None},
            "billing_reason": "manual", "collection_method": method, "created": ts, "currency": cur,
            "custom_fields": None, "customer": cust.external_key, "customer_email": cust.data.get("email"),
            "customer_name": cust.data.get("name"), "days_until_due": days, "default_payment_method": None,
            "description": params.get("description") or None, "discounts": [], "due_date": due_date,
            "effective_at": None, "ending_balance": None, "footer": None, "hosted_invoice_url": None,
            "invoice_pdf": None, "last_finalization_error": None, "livemode": False, "metadata": metadata_param(params),
            "next_payment_attempt": None, "number": None, "parent": None, "period_end": ts, "period_start": ts,
            "receipt_number": None, "starting_balance": 0, "statement_descriptor": None, "status": "draft",
            "status_transitions": {"finalized_at": None, "marked_uncollectible_at": None, "paid_at": None,
                                   "voided_at": None},
            "subtotal": 0, "subtotal_excluding_tax": 0, "test_clock": None, "total": 0, "total_discount_amounts": [],
            "total_excluding_tax": 0, "total_taxes": [], "webhooks_delivered_at": None}
    inv = create_object("invoice", data)
    if behaviour == "include":  # the customer's pending invoice items join this invoice
        for item in SandboxObject.objects.filter(system="stripe", object_type="invoiceitem",
                                                 data__customer=cust.external_key, data__invoice=None):
            item.data["invoice"] = data["id"]
            item.save(update_fields=["data"])
    _recompute(inv.data, _items_of(data["id"]))
    inv.save(update_fields=["data"])
    outbox.append(("invoice.created", inv.data))
    return respond(inv.data)


invoice_search = search_view("invoice", "/v1/invoices/search")


def invoice(request, params, outbox, m):
    obj = get_object("invoice", m.group(1), lock=request.method == "POST")
    if request.method == "POST":
        if obj.data["status"] != "draft" and set(params) - {"metadata", "description", "expand"}:
            raise ApiError(400, "Finalized invoices can't be updated in this way", code="invoice_not_editable")
        if "metadata" in params:
            obj.data["metadata"] = {**obj.data["metadata"], **metadata_param(params)}
        if "description" in params:
            obj.data["description"] = params["description"] or None
        if "days_until_due" in params:
            obj.data["days_until_due"] = int_param(params, "days_until_due")
        save_object(obj)
    return respond(obj.data)


def finalize(request, params, outbox, m):
    obj = get_object("invoice", m.group(1), lock=True)
    inv = obj.data
    if inv["status"] != "draft":
        raise ApiError(400, "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
                       code="invoice_not_editable")
    cust = get_object("customer", inv["customer"], lock=True)
    seq = cust.data.get("next_invoice_sequence", 1)
    cust.data["next_invoice_sequence"] = seq + 1
    save_object(cust)
    ts = now()
    inv["number"] = f"{cust.data['invoice_prefix']}-{seq:04d}"
    inv["status_transitions"]["finalized_at"] = ts
    inv["effective_at"] = ts
    inv["auto_advance"] = bool_param(params, "auto_advance", inv["auto_advance"])
    if inv["collection_method"] == "send_invoice" and inv["due_date"] is None:
        inv["due_date"] = ts + 86400 * (inv["days_until_due"] or 0)
    inv["hosted_invoice_url"] = f"https://invoice.stripe.com/i/sandbox/{inv['id']}"
    inv["invoice_pdf"] = f"https://pay.stripe.com/invoice/sandbox/{inv['id']}/pdf"
    if inv["amount_due"] == 0:  # nothing to collect: Stripe marks it paid at once
        inv["status"] = "paid"
        inv["status_transitions"]["paid_at"] = ts
    else:
        inv["status"] = "open"
    save_object(obj)
    outbox.append(("invoice.finalized", json.loads(json.dumps(inv))))
    if inv["status"] == "paid":
        outbox.append(("invoice.paid", inv))
    return respond(inv)


def close(kind: str):
    """void / mark_uncollectible: an open (or uncollectible) invoice ends there."""
    status, stamp, event = {"void": ("void", "voided_at", "invoice.voided"),
                            "mark_uncollectible": ("uncollectible", "marked_uncollectible_at",
                                                   "invoice.marked_uncollectible")}[kind]

    def handler(request, params, outbox, m):
        obj = get_object("invoice", m.group(1), lock=True)
        inv = obj.data
        if inv["status"] not in ("open", "uncollectible") or inv["status"] == status:
            raise ApiError(400, f"You can only {kind.replace('_', ' ')} an open invoice; this invoice is "
                                f"{inv['status']}.", code="invoice_not_editable")
        inv["status"] = status
        inv["status_transitions"][stamp] = now()
        save_object(obj)
        outbox.append((event, inv))
        return respond(inv)

    return handler
