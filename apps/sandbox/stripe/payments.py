"""Stripe payments: paying an invoice (charge and invoice payment), test payment methods that decline or
dispute, invoice payments, and a customer's dispute of a paid invoice."""

from __future__ import annotations

from django.db.models import F

from ..models import SandboxObject
from .api import (ApiError, bool_param, create_object, error_response, get_object, int_param, list_of, new_id, now,
                 respond, save_object)
from .webhooks import emit

DECLINE_METHODS = {"pm_card_chargeDeclined", "pm_card_visa_chargeDeclined", "pm_card_chargeDeclinedInsufficientFunds"}
DISPUTE_METHODS = {"pm_card_createDispute"}


def _charge(inv: dict, payment_method: str) -> tuple[dict, dict]:
    ts = now()
    pi = new_id("payment_intent")
    charge = {"id": new_id("charge"), "object": "charge", "amount": inv["amount_remaining"],
              "amount_captured": inv["amount_remaining"], "amount_refunded": 0, "captured": True, "created": ts,
              "currency": inv["currency"], "customer": inv["customer"], "disputed": False, "livemode": False,
              "metadata": {}, "paid": True, "payment_intent": pi, "payment_method": payment_method,
              "refunded": False, "status": "succeeded", "description": f"Payment for Invoice {inv['number']}"}
    create_object("charge", charge)
    payment = {"id": new_id("invoice_payment"), "object": "invoice_payment", "amount_paid": charge["amount"],
               "amount_requested": charge["amount"], "created": ts, "currency": inv["currency"],
               "invoice": inv["id"], "is_default": True, "livemode": False,
               "payment": {"type": "payment_intent", "payment_intent": pi},
               "status": "paid", "status_transitions": {"canceled_at": None, "paid_at": ts}}
    create_object("invoice_payment", payment)
    return charge, payment


def _paid(obj: SandboxObject, amount: int, ts: int, outbox: list) -> None:
    """The invoice is paid in full by `amount` (what remained): invoice.paid."""
    inv = obj.data
    inv["amount_paid"] += amount
    inv["amount_remaining"] = 0
    inv["status"] = "paid"
    inv["status_transitions"]["paid_at"] = ts
    save_object(obj)
    outbox.append(("invoice.paid", inv))


def pay(request, params, outbox, m):
    obj = get_object("invoice", m.group(1), lock=True)
    inv = obj.data
    if inv["status"] == "paid":
        raise ApiError(400, "Invoice is already paid", code="invoice_not_editable")
    if inv["status"] not in ("open", "uncollectible"):
        raise ApiError(400, f"You can only pay an open invoice; this invoice is {inv['status']}.",
                       code="invoice_not_editable")
    ts = now()
    inv["attempted"] = True
    inv["attempt_count"] += 1
    pm = str(params.get("payment_method") or "pm_card_visa")
    if bool_param(params, "paid_out_of_band", False):
        _paid(obj, inv["amount_remaining"], ts, outbox)
        return respond(inv)
    if pm in DECLINE_METHODS:
        inv["last_finalization_error"] = None
        inv["next_payment_attempt"] = None
        save_object(obj)  # the failed attempt is kept, as Stripe keeps it (the 402 is saved under the key too)
        outbox.append(("invoice.payment_failed", inv))
        return error_response(402, "Your card was declined.", type_="card_error", code="card_declined",
                              extra={"decline_code": "generic_decline"})
    charge, _payment = _charge(inv, pm)
    _paid(obj, charge["amount"], ts, outbox)
    if pm in DISPUTE_METHODS:
        outbox.append(("charge.dispute.created", open_dispute_on(charge)))
    return respond(inv)


def open_dispute_on(charge: dict, reason: str = "fraudulent") -> dict:
    ts = now()
    dispute = {"id": new_id("dispute"), "object": "dispute", "amount": charge["amount"], "balance_transactions": [],
               "charge": charge["id"], "created": ts, "currency": charge["currency"],
               "evidence_details": {"due_by": ts + 7 * 86400, "has_evidence": False, "past_due": False,
                                    "submission_count": 0},
               "is_charge_refundable": False, "livemode": False, "metadata": {},
               "payment_intent": charge["payment_intent"], "reason": reason, "status": "needs_response"}
    create_object("dispute", dispute)
    SandboxObject.objects.filter(system="stripe", object_type="charge", external_key=charge["id"]).update(
        writes=F("writes") + 1)
    c = SandboxObject.objects.get(system="stripe", object_type="charge", external_key=charge["id"])
    c.data["disputed"] = True
    c.save(update_fields=["data"])
    return dispute


def invoice_payments(request, params, outbox, m):
    qs = SandboxObject.objects.filter(system="stripe", object_type="invoice_payment")
    if params.get("invoice"):
        qs = qs.filter(data__invoice=params["invoice"])
    payment = params.get("payment") or {}
    if isinstance(payment, dict) and payment.get("payment_intent"):
        qs = qs.filter(data__payment__payment_intent=payment["payment_intent"])
    limit = min(int_param(params, "limit", default=10), 100)
    return respond(list_of("invoice_payment", [o.data for o in qs.order_by("-pk")[:limit]], "/v1/invoice_payments"))


def open_dispute(invoice_id: str, reason: str = "fraudulent") -> dict:
    """A customer disputes the payment of a paid invoice (what a bank does): charge.dispute.created is emitted."""
    payment = SandboxObject.objects.filter(system="stripe", object_type="invoice_payment",
                                           data__invoice=invoice_id).order_by("-pk").first()
    if payment is None:
        raise ValueError(f"invoice {invoice_id} has no payment to dispute")
    charge = SandboxObject.objects.get(system="stripe", object_type="charge",
                                       data__payment_intent=payment.data["payment"]["payment_intent"])
    dispute = open_dispute_on(charge.data, reason)
    emit("charge.dispute.created", dispute)
    return dispute
