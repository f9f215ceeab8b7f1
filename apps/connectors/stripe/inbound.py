"""Stripe webhooks: verified with `Stripe-Signature` exactly as Stripe documents it, then turned into records of
invoice-payment-to-CRM. Every refusal of a Stripe callback is made here (the JSON checks by the shared
apps/connectors/callbacks.json_body).

Verification (stripe.WebhookSignature.verify_header, the official library's check): the header is
`t=<unix seconds>,v1=<hex>[,v1=<hex>…]` (several v1 signatures during a secret roll; any one may match),
the signature is HMAC-SHA256(endpoint secret, "<t>.<raw body>"), and a `t` older than 300 s is refused (replay
protection). Refusals: missing header / malformed header / no matching signature / stale timestamp → 401;
body not UTF-8 or not JSON, or not a Stripe event → 400; not application/json → 415.

The Stripe event id (`evt_…`) is the event id, so a redelivered event is stored once. Events acted on:
invoice.finalized, invoice.paid, invoice.payment_failed, invoice.voided, invoice.marked_uncollectible (one record
per invoice, `invoice:<in_…>`) and charge.dispute.created (`dispute:<dp_…>`; its invoice is looked up through
Stripe's API by the workflow). Anything else is stored as ignored.

The record's `source_modified_at` is the invoice state's version: the event's `created` time, then the state's
rank (apps/finance/invoicing.py), so a newer state re-runs an already-written invoice and an older one never does.
"""

from __future__ import annotations

import stripe

from apps.connectors import ids
from apps.connectors.callbacks import EventSpec, Rejected, checked_id, json_body, signed_at
from apps.finance.invoicing import parse_time, state_version, utc_text

from .mapping import STRIPE_STATUS, invoice_view, money, unix_date

TOLERANCE_SECONDS = 300
INVOICE_EVENTS = {
    "invoice.finalized": None,  # the invoice's own status (open; paid when nothing was due)
    "invoice.paid": "paid",
    "invoice.payment_failed": "payment_failed",
    "invoice.voided": "void",
    "invoice.marked_uncollectible": "uncollectible",
}


def _verify(conn, body: bytes, headers) -> str:
    header = headers.get("Stripe-Signature", "")
    if not header:
        raise Rejected(401, "Stripe: missing Stripe-Signature header")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected(400, "Stripe: the body is not valid UTF-8")
    if not conn.inbound_secret:
        raise Rejected(401, "Stripe: this connection has no webhook signing secret (whsec_…) configured")
    stamps = [item.split("=", 1)[1] for item in header.split(",") if item.strip().startswith("t=")]
    if stamps:  # the library refuses an old `t` only; one ahead of now by more than the tolerance is refused too
        signed_at(stamps[0], name="Stripe-Signature t", per_second=1, max_age=TOLERANCE_SECONDS, who="Stripe: ")
    try:
        stripe.WebhookSignature.verify_header(text, header, conn.inbound_secret, TOLERANCE_SECONDS)
    except stripe.SignatureVerificationError as exc:
        msg = str(exc)
        if "tolerance" in msg:
            raise Rejected(401, f"Stripe: stale timestamp: the event was signed more than {TOLERANCE_SECONDS} s ago "
                                f"(t={header.split('t=')[-1].split(',')[0][:20]})")
        if "Unable to extract" in msg or "No signatures found with expected scheme" in msg:
            raise Rejected(401, "Stripe: malformed Stripe-Signature header (expected t=<timestamp>,v1=<signature>)")
        raise Rejected(401, "Stripe: bad signature: no v1 signature in Stripe-Signature matches the body")
    return text


def parse_event(conn, event) -> EventSpec:
    if not isinstance(event, dict) or event.get("object") != "event" or not isinstance(event.get("id"), str) \
            or not event["id"].strip() or not isinstance(event.get("type"), str):
        raise Rejected(400, 'Stripe: not a Stripe event (an object with "object": "event", an "id" and a "type")')
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        raise Rejected(400, f"Stripe: event {event['id'][:60]} has no data.object")
    created = parse_time(event.get("created"))
    if created is None:
        raise Rejected(400, f"Stripe: event {event['id'][:60]} has no valid created time")
    etype = event["type"][:100]
    _stripe_id(event["id"], "id", "evt")
    spec = EventSpec(event_id=event["id"], event_type=etype, body=event)
    if etype in INVOICE_EVENTS:
        if obj.get("object") != "invoice" or not obj.get("id"):
            raise Rejected(400, f"Stripe: {etype} event {event['id'][:60]} does not carry an invoice")
        _checked_object(obj, {"id": "in", "customer": "cus"}, ("total", "amount_paid", "amount_remaining"))
        status = INVOICE_EVENTS[etype] or STRIPE_STATUS.get(str(obj.get("status")), "open")
        view = invoice_view(obj, status)
        spec.workflow = "invoice_payment_to_crm"
        spec.source_key = f"invoice:{view['id'][:150]}"
        spec.title = f"Stripe invoice {view['number'] or view['id']} {status.replace('_', ' ')}"
        spec.payload = {"source": "stripe", "event_type": etype, "object": "invoice", "object_id": view["id"],
                        "status": status, "state_at": utc_text(created), "invoices": [view], "payments": [],
                        "fetch": "payments" if status == "paid" else "",
                        "source_modified_at": state_version(status, created)}
        return spec
    if etype == "charge.dispute.created":
        if obj.get("object") != "dispute" or not obj.get("id"):
            raise Rejected(400, f"Stripe: {etype} event {event['id'][:60]} does not carry a dispute")
        _checked_object(obj, {"id": "dp", "charge": "ch", "payment_intent": "pi"}, ("amount",))
        cur = str(obj.get("currency") or "").upper()
        dispute = {"id": str(obj["id"]), "charge": str(obj.get("charge") or ""),
                   "payment_intent": str(obj.get("payment_intent") or ""), "amount": money(obj.get("amount"), cur),
                   "currency": cur, "reason": str(obj.get("reason") or ""), "status": str(obj.get("status") or ""),
                   "due_by": unix_date((obj.get("evidence_details") or {}).get("due_by"))}
        spec.workflow = "invoice_payment_to_crm"
        spec.source_key = f"dispute:{dispute['id'][:150]}"
        spec.title = f"Stripe dispute {dispute['id']} ({dispute['amount']} {cur}, {dispute['reason'] or 'no reason'})"
        spec.payload = {"source": "stripe", "event_type": etype, "object": "dispute", "object_id": dispute["id"],
                        "status": "disputed", "state_at": utc_text(created), "invoices": [], "payments": [],
                        "dispute": dispute, "fetch": "dispute_invoice",
                        "source_modified_at": state_version("disputed", created)}
        return spec
    spec.ignored = f"no workflow acts on Stripe {etype!r} events"
    return spec


# Stripe documents amounts of at most 8 digits for a charge; an invoice's may be longer, but no real one reaches
# this: a larger number (`1e400`, a float) is not an amount in the currency's minor unit
MAX_MINOR_UNITS = 10**15


def _stripe_id(value, field: str, prefix: str) -> str:
    """An id that goes into Stripe's API URLs and the record key: `<prefix>_` then letters and digits."""
    return checked_id(lambda v: ids.stripe_id(v, prefix), value, field, "Stripe")


def _checked_object(obj: dict, id_fields: dict, amount_fields: tuple) -> None:
    """The object's ids in Stripe's format (the required `id`, the others when present) and its amounts whole
    numbers of the currency's minor unit, or Rejected(400) naming the field."""
    for name, prefix in id_fields.items():
        if name == "id" or obj.get(name) not in (None, ""):
            _stripe_id(obj.get(name), f"data.object.{name}", prefix)
    for name in amount_fields:
        value = obj.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or abs(value) >= MAX_MINOR_UNITS):
            raise Rejected(400, f"Stripe: data.object.{name} must be a whole number of the currency's minor unit, "
                                f"not {str(value)[:40]}")


def verify_and_parse(conn, *, method: str, uris: list[str], body: bytes, headers) -> list[EventSpec]:
    _verify(conn, body, headers)
    event = json_body(body, headers, "Stripe callbacks")
    return [parse_event(conn, event)]
