"""NetSuite (ERP) callbacks: invoices and customer payments, sent by the firm's SuiteScript user event
(afterSubmit) and signed per Standard Webhooks. Every refusal of a NetSuite callback is made here (signature,
JSON and envelope by the shared apps/connectors/standard_webhooks/signature.verified_message).

One message per request:

    webhook-id: msg_…   webhook-timestamp: 1700000000   webhook-signature: v1,…
    {"type": "invoice.created" | "invoice.updated" | "customerpayment.created" | "customerpayment.updated",
     "timestamp": "2026-11-23T10:00:00Z", "data": { …the record as the REST record service returns it… }}

- An invoice (`id`, `tranId`, `externalId`, `entity`, `currency.refName`, `total`, `amountPaid`,
  `amountRemaining`, `status.id` open/paidInFull/…, `dueDate`, `tranDate`, `lastModifiedDate`) becomes one record
  per invoice (`invoice:<internal id>`); `lastModifiedDate` and the status rank order its versions.
- A customer payment (`id`, `customer`, `payment`, `currency`, `tranDate`, `apply.items[].doc.id/amount`) becomes
  one record per payment (`payment:<internal id>`); the workflow reads each paid invoice's current state from
  NetSuite (a payment says how much was applied, not what the invoice now shows).
The webhook-id is the event id: a redelivery is stored once. Other types are stored as ignored.
"""

from __future__ import annotations

from apps.connectors import ids
from apps.connectors.callbacks import EventSpec, Rejected, checked_id
from apps.connectors.standard_webhooks import signature
from apps.finance.invoicing import parse_time, state_version, utc_text

from .mapping import amount_text, currency_code, invoice_view, record_ref

MESSAGE_KINDS = {"invoice.created": "invoice", "invoice.updated": "invoice",
                 "customerpayment.created": "payment", "customerpayment.updated": "payment"}


def parse_message(conn, event_id: str, envelope: dict) -> EventSpec:
    etype, data = envelope["type"][:100], envelope["data"]
    spec = EventSpec(event_id=event_id, event_type=etype, body=envelope)
    kind = MESSAGE_KINDS.get(etype)
    if kind is None:
        spec.ignored = f"no workflow acts on NetSuite {etype!r} callbacks"
        return spec
    if not record_ref(data.get("id")):
        raise Rejected(400, f"NetSuite: the {etype} record has no id")
    rid = checked_id(ids.netsuite_id, record_ref(data.get("id")), "id", f"NetSuite {etype}")
    at = parse_time(data.get("lastModifiedDate")) or parse_time(envelope.get("timestamp"))
    if at is None:
        raise Rejected(400, f"NetSuite: {kind} {rid} has neither lastModifiedDate nor a valid timestamp")
    if kind == "invoice":
        view = invoice_view(data)
        if not view["currency"] or not view["total"]:
            raise Rejected(400, f"NetSuite: invoice {rid} lacks its currency or total")
        spec.workflow = "invoice_payment_to_crm"
        spec.source_key = f"invoice:{rid}"
        spec.title = f"NetSuite invoice {view['number'] or rid} {view['status'].replace('_', ' ')}"
        spec.payload = {"source": "netsuite", "event_type": etype, "object": "invoice", "object_id": rid,
                        "status": view["status"], "state_at": utc_text(at), "invoices": [view], "payments": [],
                        "fetch": "", "source_modified_at": state_version(view["status"], at)}
        return spec
    cur = currency_code(data)
    applies = ((data.get("apply") or {}).get("items")) if isinstance(data.get("apply"), dict) else None
    if not isinstance(applies, list) or not applies:
        raise Rejected(400, f"NetSuite: payment {rid} is applied to no invoice (apply.items is empty)")
    payments = []
    for i, a in enumerate(applies):
        doc = record_ref((a or {}).get("doc")) if isinstance(a, dict) else ""
        amt = amount_text((a or {}).get("amount")) if isinstance(a, dict) else ""
        if not doc or not amt:
            raise Rejected(400, f"NetSuite: payment {rid} line {i + 1} lacks doc.id or amount")
        checked_id(ids.netsuite_id, doc, f"apply.items[{i}].doc.id", f"NetSuite payment {rid}")
        if a.get("apply") is False:
            continue
        payments.append({"id": f"{rid}:{doc}", "invoice_id": doc, "amount": amt, "currency": cur,
                         "status": "succeeded", "received_at": str(data.get("tranDate") or "")[:10]})
    spec.workflow = "invoice_payment_to_crm"
    spec.source_key = f"payment:{rid}"
    spec.title = f"NetSuite payment {data.get('tranId') or rid} ({amount_text(data.get('payment'))} {cur})"
    spec.payload = {"source": "netsuite", "event_type": etype, "object": "payment", "object_id": rid,
                    "status": "", "state_at": utc_text(at), "invoices": [], "payments": payments,
                    "fetch": "invoices", "source_modified_at": utc_text(at)}
    return spec


def verify_and_parse(conn, *, method: str, uris: list[str], body: bytes, headers) -> list[EventSpec]:
    event_id, envelope = signature.verified_message(conn, headers=headers, body=body, who="NetSuite",
                                                    what="a NetSuite callback")
    return [parse_message(conn, event_id, envelope)]
