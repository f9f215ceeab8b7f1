"""The Stripe sandbox: Stripe's v1 API for customers, invoice items, invoices, invoice payments, charges, disputes
and events — the paths, form-encoded parameters, object shapes and error shape the `stripe` package expects —
and Stripe's webhooks, signed with `Stripe-Signature` and sent to Handoff's callback URL.

- Auth: `Authorization: Bearer sk_test_…` (faults.check: the sandbox's token), then injected faults, answered in
  Stripe's error shape `{"error": {"type", "code", "message", "param"}}`.
- Idempotency as Stripe does it: every POST may carry `Idempotency-Key`; the first request that executes saves its
  status and body, and a later request with the same key and the same parameters gets them replayed
  (`Idempotent-Replayed: true`) without executing again. The same key with other parameters (or another endpoint)
  is a 400 `idempotency_error`; while the first is still running, a 409. Requests refused before executing
  (validation errors, injected faults) save nothing.
- Webhooks: state changes emit events (`invoice.created`, `invoice.finalized`, `invoice.paid`,
  `invoice.payment_failed`, `invoice.voided`, `invoice.marked_uncollectible`, `charge.dispute.created`), each
  carrying the object (`data.object`) as it is after the change. Events are stored (GET /v1/events/<id>) and
  delivered right after the request commits to the endpoint configured with `configure_webhooks` (default:
  HANDOFF_PUBLIC_URL's Stripe callback, signed with demo.INBOUND_SECRETS["stripe"]), with
  `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`. Mode "hold" stores them undelivered so
  a test can deliver them in any order (`deliver_event`), as Stripe's retries do.
- Test payment methods: `pm_card_visa` (default) pays; `pm_card_chargeDeclined` fails (402 card_declined, event
  invoice.payment_failed); `pm_card_createDispute` pays and then opens a dispute (charge.dispute.created).
- A targeted fault for deterministic tests: `lose_next(method, path_prefix, count)` serves the next matching
  call in full, then loses its response (as faults' lost_response_rate does, but for one call).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import string
import time
from urllib.parse import parse_qsl

import requests
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.http import HttpResponse

from .faults import check, hang_seconds, system_config
from .models import SandboxObject, SandboxSystem
from .views import sandbox_view

log = logging.getLogger("handoff.sandbox")

API_VERSION = "2026-08-26.dahlia"
ENABLED_EVENTS = ["invoice.finalized", "invoice.paid", "invoice.payment_failed", "invoice.voided",
                  "invoice.marked_uncollectible", "charge.dispute.created"]
PREFIX = {"customer": "cus", "invoice": "in", "invoiceitem": "ii", "line_item": "il", "charge": "ch",
          "payment_intent": "pi", "invoice_payment": "inpay", "dispute": "dp", "event": "evt", "request": "req"}
DECLINE_METHODS = {"pm_card_chargeDeclined", "pm_card_visa_chargeDeclined", "pm_card_chargeDeclinedInsufficientFunds"}
DISPUTE_METHODS = {"pm_card_createDispute"}
_ALNUM = string.ascii_letters + string.digits


def new_id(kind: str) -> str:
    return f"{PREFIX[kind]}_{''.join(secrets.choice(_ALNUM) for _ in range(24))}"


def now() -> int:
    return int(time.time())


class ApiError(Exception):
    """A request Stripe refuses before executing it (nothing saved under its Idempotency-Key)."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error", code: str = "",
                 param: str = "", extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.extra = extra or {}

    def response(self) -> HttpResponse:
        return error_response(self.status, self.message, type_=self.type, code=self.code, param=self.param,
                              extra=self.extra)


def error_response(status: int, message: str, *, type_: str = "invalid_request_error", code: str = "",
                   param: str = "", extra: dict | None = None, headers: dict | None = None) -> HttpResponse:
    err = {"type": type_, "message": message}
    if code:
        err["code"] = code
        err["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
    if param:
        err["param"] = param
    err.update(extra or {})
    return _json({"error": err}, status, headers)


def _json(data, status: int = 200, headers: dict | None = None) -> HttpResponse:
    resp = HttpResponse(json.dumps(data), status=status, content_type="application/json")
    resp["Request-Id"] = new_id("request")
    resp["Stripe-Version"] = API_VERSION
    for k, v in (headers or {}).items():
        resp[k] = v
    return resp


# ------------------------------------------------------------------ form decoding (what the stripe package sends)


_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def decode_params(pairs) -> dict:
    """`metadata[k]=v`, `expand[0]=x`, `payment[type]=…` → nested dicts and lists, as Stripe reads them."""
    out: dict = {}
    for key, value in pairs:
        m = _KEY.match(key)
        if not m:
            raise ApiError(400, f"Invalid parameter name: {key}", code="parameter_unknown", param=key)
        parts = [m.group(1)] + re.findall(r"\[([^\[\]]*)\]", m.group(2))
        cur = out
        for i, part in enumerate(parts):
            if i == len(parts) - 1:
                cur[part] = value
            else:
                nxt = cur.setdefault(part, {})
                if not isinstance(nxt, dict):
                    raise ApiError(400, f"Invalid parameter: {key}", code="parameter_invalid", param=key)
                cur = nxt
    return _listify(out)


def _listify(d):
    if isinstance(d, dict):
        d = {k: _listify(v) for k, v in d.items()}
        if d and all(k.isdigit() for k in d):
            return [d[k] for k in sorted(d, key=int)]
    return d


def _int(params: dict, name: str, *, required: bool = False, default=None):
    if name not in params or params[name] == "":
        if required:
            raise ApiError(400, f"Missing required param: {name}.", code="parameter_missing", param=name)
        return default
    try:
        return int(params[name])
    except (TypeError, ValueError):
        raise ApiError(400, f"Invalid integer: {params[name]}", code="parameter_invalid_integer", param=name)


def _bool(params: dict, name: str, default: bool | None = None):
    if name not in params:
        return default
    v = str(params[name]).lower()
    if v not in ("true", "false"):
        raise ApiError(400, f"Invalid boolean: {params[name]}", code="parameter_invalid_boolean", param=name)
    return v == "true"


def _metadata(params: dict) -> dict:
    md = params.get("metadata") or {}
    if md == "":
        return {}
    if not isinstance(md, dict):
        raise ApiError(400, "Invalid metadata: must be an object", code="parameter_invalid", param="metadata")
    return {str(k)[:40]: str(v)[:500] for k, v in md.items()}


# ------------------------------------------------------------------ storage


def _get(kind: str, obj_id: str, *, lock: bool = False) -> SandboxObject:
    qs = SandboxObject.objects.filter(system="stripe", object_type=kind, external_key=obj_id)
    obj = (qs.select_for_update() if lock else qs).first()
    if obj is None:
        label = {"invoiceitem": "invoice item", "invoice_payment": "invoice payment"}.get(kind, kind)
        raise ApiError(404, f"No such {label}: '{obj_id}'", code="resource_missing", param="id")
    return obj


def _create(kind: str, data: dict) -> SandboxObject:
    return SandboxObject.objects.create(system="stripe", object_type=kind, external_key=data["id"], data=data)


def _save(obj: SandboxObject) -> None:
    obj.writes = F("writes") + 1
    obj.save()
    obj.refresh_from_db(fields=["writes"])


def _list(kind: str, items: list[dict], url: str) -> dict:
    return {"object": "list", "data": items, "has_more": False, "url": url}


_CLAUSE = re.compile(r"^\s*(\w+)(?:\['([^']+)'\])?\s*:\s*'([^']*)'\s*$")


def _search(kind: str, query: str, limit: int, url: str) -> dict:
    """Stripe's search query language, the part Handoff uses: `field:'v'`, `metadata['k']:'v'`, joined by AND."""
    if not query:
        raise ApiError(400, "Missing required param: query.", code="parameter_missing", param="query")
    qs = SandboxObject.objects.filter(system="stripe", object_type=kind)
    for clause in re.split(r"\s+AND\s+", query.strip()):
        m = _CLAUSE.match(clause)
        if not m:
            raise ApiError(400, f"Invalid search query: {query!r}", code="parameter_invalid", param="query")
        field, key, value = m.groups()
        lookup = f"data__metadata__{key}" if field == "metadata" and key else f"data__{field}"
        qs = qs.filter(**{lookup: value})
    items = [o.data for o in qs.order_by("-pk")[:limit]]
    return {"object": "search_result", "data": items, "has_more": False, "next_page": None, "url": url}


# ------------------------------------------------------------------ customers


def customers(request, params, outbox, m):
    if request.method == "POST":
        email = str(params.get("email") or "") or None
        data = {"id": new_id("customer"), "object": "customer", "address": None, "balance": 0, "created": now(),
                "currency": None, "default_source": None, "delinquent": False,
                "description": params.get("description") or None, "email": email,
                "invoice_prefix": "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(8)),
                "invoice_settings": {"custom_fields": None, "default_payment_method": None, "footer": None,
                                     "rendering_options": None},
                "livemode": False, "metadata": _metadata(params), "name": params.get("name") or None,
                "next_invoice_sequence": 1, "phone": params.get("phone") or None, "preferred_locales": [],
                "shipping": None, "tax_exempt": "none", "test_clock": None}
        return _json(_create("customer", data).data)
    limit = min(_int(params, "limit", default=10), 100)
    qs = SandboxObject.objects.filter(system="stripe", object_type="customer")
    if params.get("email"):
        qs = qs.filter(data__email=params["email"])
    return _json(_list("customer", [o.data for o in qs.order_by("-pk")[:limit]], "/v1/customers"))


def customer_search(request, params, outbox, m):
    return _json(_search("customer", str(params.get("query") or ""), min(_int(params, "limit", default=10), 100),
                         "/v1/customers/search"))


def customer(request, params, outbox, m):
    obj = _get("customer", m.group(1), lock=request.method == "POST")
    if request.method == "POST":
        for f in ("name", "email", "description", "phone"):
            if f in params:
                obj.data[f] = params[f] or None
        if "metadata" in params:
            obj.data["metadata"] = {**obj.data.get("metadata", {}), **_metadata(params)}
        _save(obj)
    return _json(obj.data)


# ------------------------------------------------------------------ invoice items and invoices


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
        qs = SandboxObject.objects.filter(system="stripe", object_type="invoiceitem")
        for f in ("customer", "invoice"):
            if params.get(f):
                qs = qs.filter(**{f"data__{f}": params[f]})
        limit = min(_int(params, "limit", default=10), 100)
        return _json(_list("invoiceitem", [o.data for o in qs.order_by("-pk")[:limit]], "/v1/invoiceitems"))
    cust_id = params.get("customer")
    if not cust_id:
        raise ApiError(400, "Missing required param: customer.", code="parameter_missing", param="customer")
    cust = _get("customer", cust_id)
    cur = _currency(params)
    quantity = _int(params, "quantity", default=1)
    if "amount" in params:
        amount = _int(params, "amount")
        unit = amount // quantity if quantity else amount
    else:
        unit = _int(params, "unit_amount", required=True)
        amount = unit * quantity
    if amount is None:
        raise ApiError(400, "Missing required param: amount.", code="parameter_missing", param="amount")
    invoice_id = params.get("invoice") or None
    inv = None
    if invoice_id:
        inv = _get("invoice", invoice_id, lock=True)
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
            "metadata": _metadata(params), "parent": None, "period": {"start": ts, "end": ts}, "pricing": None,
            "proration": False, "quantity": quantity, "tax_rates": [], "test_clock": None,
            "unit_amount_decimal": str(unit)}
    _create("invoiceitem", data)
    if inv is not None:
        _recompute(inv.data, _items_of(invoice_id))
        _save(inv)
    return _json(data)


def invoiceitem(request, params, outbox, m):
    return _json(_get("invoiceitem", m.group(1)).data)


def invoices(request, params, outbox, m):
    if request.method == "GET":
        qs = SandboxObject.objects.filter(system="stripe", object_type="invoice")
        for f in ("customer", "status"):
            if params.get(f):
                qs = qs.filter(**{f"data__{f}": params[f]})
        limit = min(_int(params, "limit", default=10), 100)
        return _json(_list("invoice", [o.data for o in qs.order_by("-pk")[:limit]], "/v1/invoices"))
    cust_id = params.get("customer")
    if not cust_id:
        raise ApiError(400, "Missing required param: customer.", code="parameter_missing", param="customer")
    cust = _get("customer", cust_id)
    method = params.get("collection_method") or "charge_automatically"
    if method not in ("charge_automatically", "send_invoice"):
        raise ApiError(400, f"Invalid collection_method: {method}", code="parameter_invalid",
                       param="collection_method")
    days = _int(params, "days_until_due")
    due_date = _int(params, "due_date")
    if method == "send_invoice" and days is None and due_date is None:
        raise ApiError(400, "Missing required param: days_until_due.", code="parameter_missing",
                       param="days_until_due")
    behaviour = params.get("pending_invoice_items_behavior") or "exclude"
    cur = _currency(params, required=False) or cust.data.get("currency") or "usd"
    ts = now()
    data = {"id": new_id("invoice"), "object": "invoice", "account_country": "US",
            "account_name": "Handoff Consulting (Stripe sandbox)", "amount_due": 0, "amount_overpaid": 0,
            "amount_paid": 0, "amount_remaining": 0, "amount_shipping": 0, "attempt_count": 0, "attempted": False,
            "auto_advance": _bool(params, "auto_advance", False), "automatic_tax": {"enabled": False,
                                                                                   "liability": None,
                                                                                   "status": None},
            "billing_reason": "manual", "collection_method": method, "created": ts, "currency": cur,
            "custom_fields": None, "customer": cust.external_key, "customer_email": cust.data.get("email"),
            "customer_name": cust.data.get("name"), "days_until_due": days, "default_payment_method": None,
            "description": params.get("description") or None, "discounts": [], "due_date": due_date,
            "effective_at": None, "ending_balance": None, "footer": None, "hosted_invoice_url": None,
            "invoice_pdf": None, "last_finalization_error": None, "livemode": False, "metadata": _metadata(params),
            "next_payment_attempt": None, "number": None, "parent": None, "period_end": ts, "period_start": ts,
            "receipt_number": None, "starting_balance": 0, "statement_descriptor": None, "status": "draft",
            "status_transitions": {"finalized_at": None, "marked_uncollectible_at": None, "paid_at": None,
                                   "voided_at": None},
            "subtotal": 0, "subtotal_excluding_tax": 0, "test_clock": None, "total": 0, "total_discount_amounts": [],
            "total_excluding_tax": 0, "total_taxes": [], "webhooks_delivered_at": None}
    inv = _create("invoice", data)
    if behaviour == "include":  # the customer's pending invoice items join this invoice
        for item in SandboxObject.objects.filter(system="stripe", object_type="invoiceitem",
                                                 data__customer=cust.external_key, data__invoice=None):
            item.data["invoice"] = data["id"]
            item.save(update_fields=["data"])
    _recompute(inv.data, _items_of(data["id"]))
    inv.save(update_fields=["data"])
    outbox.append(("invoice.created", inv.data))
    return _json(inv.data)


def invoice_search(request, params, outbox, m):
    return _json(_search("invoice", str(params.get("query") or ""), min(_int(params, "limit", default=10), 100),
                         "/v1/invoices/search"))


def invoice(request, params, outbox, m):
    obj = _get("invoice", m.group(1), lock=request.method == "POST")
    if request.method == "POST":
        if obj.data["status"] != "draft" and set(params) - {"metadata", "description", "expand"}:
            raise ApiError(400, "Finalized invoices can't be updated in this way", code="invoice_not_editable")
        if "metadata" in params:
            obj.data["metadata"] = {**obj.data["metadata"], **_metadata(params)}
        if "description" in params:
            obj.data["description"] = params["description"] or None
        if "days_until_due" in params:
            obj.data["days_until_due"] = _int(params, "days_until_due")
        _save(obj)
    return _json(obj.data)


def finalize(request, params, outbox, m):
    obj = _get("invoice", m.group(1), lock=True)
    inv = obj.data
    if inv["status"] != "draft":
        raise ApiError(400, "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
                       code="invoice_not_editable")
    cust = _get("customer", inv["customer"], lock=True)
    seq = cust.data.get("next_invoice_sequence", 1)
    cust.data["next_invoice_sequence"] = seq + 1
    _save(cust)
    ts = now()
    inv["number"] = f"{cust.data['invoice_prefix']}-{seq:04d}"
    inv["status_transitions"]["finalized_at"] = ts
    inv["effective_at"] = ts
    inv["auto_advance"] = _bool(params, "auto_advance", inv["auto_advance"])
    if inv["collection_method"] == "send_invoice" and inv["due_date"] is None:
        inv["due_date"] = ts + 86400 * (inv["days_until_due"] or 0)
    inv["hosted_invoice_url"] = f"https://invoice.stripe.com/i/sandbox/{inv['id']}"
    inv["invoice_pdf"] = f"https://pay.stripe.com/invoice/sandbox/{inv['id']}/pdf"
    if inv["amount_due"] == 0:  # nothing to collect: Stripe marks it paid at once
        inv["status"] = "paid"
        inv["status_transitions"]["paid_at"] = ts
    else:
        inv["status"] = "open"
    _save(obj)
    outbox.append(("invoice.finalized", json.loads(json.dumps(inv))))
    if inv["status"] == "paid":
        outbox.append(("invoice.paid", inv))
    return _json(inv)


def _charge(inv: dict, payment_method: str) -> tuple[dict, dict]:
    ts = now()
    pi = new_id("payment_intent")
    charge = {"id": new_id("charge"), "object": "charge", "amount": inv["amount_remaining"],
              "amount_captured": inv["amount_remaining"], "amount_refunded": 0, "captured": True, "created": ts,
              "currency": inv["currency"], "customer": inv["customer"], "disputed": False, "livemode": False,
              "metadata": {}, "paid": True, "payment_intent": pi, "payment_method": payment_method,
              "refunded": False, "status": "succeeded", "description": f"Payment for Invoice {inv['number']}"}
    _create("charge", charge)
    payment = {"id": new_id("invoice_payment"), "object": "invoice_payment", "amount_paid": charge["amount"],
               "amount_requested": charge["amount"], "created": ts, "currency": inv["currency"],
               "invoice": inv["id"], "is_default": True, "livemode": False,
               "payment": {"type": "payment_intent", "payment_intent": pi},
               "status": "paid", "status_transitions": {"canceled_at": None, "paid_at": ts}}
    _create("invoice_payment", payment)
    return charge, payment


def pay(request, params, outbox, m):
    obj = _get("invoice", m.group(1), lock=True)
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
    if _bool(params, "paid_out_of_band", False):
        inv["amount_paid"] += inv["amount_remaining"]
        inv["amount_remaining"] = 0
        inv["status"] = "paid"
        inv["status_transitions"]["paid_at"] = ts
        _save(obj)
        outbox.append(("invoice.paid", inv))
        return _json(inv)
    if pm in DECLINE_METHODS:
        inv["last_finalization_error"] = None
        inv["next_payment_attempt"] = None
        _save(obj)  # the failed attempt is kept, as Stripe keeps it (the 402 is saved under the key too)
        outbox.append(("invoice.payment_failed", inv))
        return error_response(402, "Your card was declined.", type_="card_error", code="card_declined",
                              extra={"decline_code": "generic_decline"})
    charge, _payment = _charge(inv, pm)
    inv["amount_paid"] += charge["amount"]
    inv["amount_remaining"] = 0
    inv["status"] = "paid"
    inv["status_transitions"]["paid_at"] = ts
    _save(obj)
    outbox.append(("invoice.paid", inv))
    if pm in DISPUTE_METHODS:
        outbox.append(("charge.dispute.created", _dispute(charge)))
    return _json(inv)


def _dispute(charge: dict, reason: str = "fraudulent") -> dict:
    ts = now()
    dispute = {"id": new_id("dispute"), "object": "dispute", "amount": charge["amount"], "balance_transactions": [],
               "charge": charge["id"], "created": ts, "currency": charge["currency"],
               "evidence_details": {"due_by": ts + 7 * 86400, "has_evidence": False, "past_due": False,
                                    "submission_count": 0},
               "is_charge_refundable": False, "livemode": False, "metadata": {},
               "payment_intent": charge["payment_intent"], "reason": reason, "status": "needs_response"}
    _create("dispute", dispute)
    SandboxObject.objects.filter(system="stripe", object_type="charge", external_key=charge["id"]).update(
        writes=F("writes") + 1)
    c = SandboxObject.objects.get(system="stripe", object_type="charge", external_key=charge["id"])
    c.data["disputed"] = True
    c.save(update_fields=["data"])
    return dispute


def _close(kind: str):
    """void / mark_uncollectible: an open (or uncollectible) invoice ends there."""
    status, stamp, event = {"void": ("void", "voided_at", "invoice.voided"),
                            "mark_uncollectible": ("uncollectible", "marked_uncollectible_at",
                                                   "invoice.marked_uncollectible")}[kind]

    def handler(request, params, outbox, m):
        obj = _get("invoice", m.group(1), lock=True)
        inv = obj.data
        if inv["status"] not in ("open", "uncollectible") or inv["status"] == status:
            raise ApiError(400, f"You can only {kind.replace('_', ' ')} an open invoice; this invoice is "
                                f"{inv['status']}.", code="invoice_not_editable")
        inv["status"] = status
        inv["status_transitions"][stamp] = now()
        _save(obj)
        outbox.append((event, inv))
        return _json(inv)

    return handler


def invoice_payments(request, params, outbox, m):
    qs = SandboxObject.objects.filter(system="stripe", object_type="invoice_payment")
    if params.get("invoice"):
        qs = qs.filter(data__invoice=params["invoice"])
    payment = params.get("payment") or {}
    if isinstance(payment, dict) and payment.get("payment_intent"):
        qs = qs.filter(data__payment__payment_intent=payment["payment_intent"])
    limit = min(_int(params, "limit", default=10), 100)
    return _json(_list("invoice_payment", [o.data for o in qs.order_by("-pk")[:limit]], "/v1/invoice_payments"))


def simple_get(kind: str):
    def handler(request, params, outbox, m):
        obj = _get(kind, m.group(1))
        return _json(obj.data["event"] if kind == "event" else obj.data)

    return handler


def events(request, params, outbox, m):
    qs = SandboxObject.objects.filter(system="stripe", object_type="event")
    if params.get("type"):
        qs = qs.filter(data__event__type=params["type"])
    limit = min(_int(params, "limit", default=10), 100)
    return _json(_list("event", [o.data["event"] for o in qs.order_by("-pk")[:limit]], "/v1/events"))


# path → {method: handler}
ROUTES = [
    (re.compile(r"v1/customers"), {"GET": customers, "POST": customers}),
    (re.compile(r"v1/customers/search"), {"GET": customer_search}),
    (re.compile(r"v1/customers/(cus_\w+)"), {"GET": customer, "POST": customer}),
    (re.compile(r"v1/invoiceitems"), {"GET": invoiceitems, "POST": invoiceitems}),
    (re.compile(r"v1/invoiceitems/(ii_\w+)"), {"GET": invoiceitem}),
    (re.compile(r"v1/invoices"), {"GET": invoices, "POST": invoices}),
    (re.compile(r"v1/invoices/search"), {"GET": invoice_search}),
    (re.compile(r"v1/invoices/(in_\w+)"), {"GET": invoice, "POST": invoice}),
    (re.compile(r"v1/invoices/(in_\w+)/finalize"), {"POST": finalize}),
    (re.compile(r"v1/invoices/(in_\w+)/pay"), {"POST": pay}),
    (re.compile(r"v1/invoices/(in_\w+)/void"), {"POST": _close("void")}),
    (re.compile(r"v1/invoices/(in_\w+)/mark_uncollectible"), {"POST": _close("mark_uncollectible")}),
    (re.compile(r"v1/invoice_payments"), {"GET": invoice_payments}),
    (re.compile(r"v1/invoice_payments/(inpay_\w+)"), {"GET": simple_get("invoice_payment")}),
    (re.compile(r"v1/charges/(ch_\w+)"), {"GET": simple_get("charge")}),
    (re.compile(r"v1/disputes/(dp_\w+)"), {"GET": simple_get("dispute")}),
    (re.compile(r"v1/events"), {"GET": events}),
    (re.compile(r"v1/events/(evt_\w+)"), {"GET": simple_get("event")}),
]


# ------------------------------------------------------------------ the view


def _restripe(resp: HttpResponse) -> HttpResponse:
    """An auth refusal or injected fault from faults.check, in Stripe's error shape (keeping status and headers)."""
    status = resp.status_code
    if status == 401:
        out = error_response(401, "Invalid API Key provided: sk_test_****", type_="invalid_request_error")
    elif status == 429:
        out = error_response(429, "Request rate limit exceeded. Learn more about rate limits here "
                                  "https://stripe.com/docs/rate-limits.", code="rate_limit")
    else:
        out = error_response(status, "An unknown error occurred (sandbox fault injection).", type_="api_error")
    if resp.has_header("Retry-After"):
        out["Retry-After"] = resp["Retry-After"]
    return out


def _fingerprint(method: str, path: str, params: dict) -> dict:
    return {"method": method, "path": path, "params": json.loads(json.dumps(params, sort_keys=True))}


def _execute(handler, request, params, m, outbox) -> HttpResponse:
    """Run a handler in one transaction: an ApiError rolls back everything it did, events included."""
    try:
        with transaction.atomic():
            return handler(request, params, outbox, m)
    except ApiError as exc:
        outbox.clear()
        raise exc


def _idempotent(request, key: str, path: str, params: dict, handler, m, outbox) -> HttpResponse:
    """Stripe's idempotency: execute once per key, replay the saved result for the same request."""
    fp = _fingerprint(request.method, path, params)
    try:
        with transaction.atomic():
            row = SandboxObject.objects.create(system="stripe", object_type="idempotency_key", external_key=key,
                                               data={"request": fp, "state": "in_progress"})
    except IntegrityError:
        row = SandboxObject.objects.get(system="stripe", object_type="idempotency_key", external_key=key)
        first = row.data["request"]
        if (first["method"], first["path"]) != (fp["method"], fp["path"]):
            raise ApiError(400, f"Keys for idempotent requests can only be used for the same endpoint they were "
                                f"first used for ('{first['method']} /{first['path']}' vs '{fp['method']} /{path}'). "
                                f"Try using a key other than '{key}' if you meant to execute a different request.",
                           type_="idempotency_error")
        if first["params"] != fp["params"]:
            raise ApiError(400, f"Keys for idempotent requests can only be used with the same parameters they were "
                                f"first used with. Try using a key other than '{key}' if you meant to execute a "
                                f"different request.", type_="idempotency_error")
        if row.data["state"] != "done":
            raise ApiError(409, f"There is currently another in-progress request using this Idempotent Key (that "
                                f"probably means you submitted twice, and the other request is still going "
                                f"through): {key}. Please try again later.", type_="idempotency_error",
                           code="idempotency_key_in_use")
        return _json(json.loads(row.data["body"]), row.data["status"], {"Idempotent-Replayed": "true",
                                                                        "Original-Request": row.data["request_id"]})
    try:
        resp = _execute(handler, request, params, m, outbox)
    except Exception:  # refused before executing (ApiError), or a crash: nothing is saved under the key
        row.delete()
        raise
    row.data = {**row.data, "state": "done", "status": resp.status_code, "body": resp.content.decode(),
                "request_id": resp["Request-Id"]}
    row.save(update_fields=["data"])
    resp["Idempotency-Key"] = key
    return resp


def _lose_targeted(request, path: str) -> None:
    """The `lose_next` fault: serve the next matching call in full, then lose its answer."""
    cfg = system_config("stripe")
    rule = (cfg.settings or {}).get("lose_next") or {}
    if not rule or rule.get("count", 0) <= 0 or request.method != rule.get("method", request.method) \
            or not ("/" + path).startswith(rule.get("path", "/")):
        return
    with transaction.atomic():
        cfg = SandboxSystem.objects.select_for_update().get(system="stripe")
        rule = (cfg.settings or {}).get("lose_next") or {}
        if rule.get("count", 0) <= 0:
            return
        rule["count"] -= 1
        cfg.settings = {**cfg.settings, "lose_next": rule}
        cfg.save(update_fields=["settings"])
    request.sandbox_lose_response = hang_seconds(cfg)


@sandbox_view
def stripe(request, path: str):
    denied = check(request, "stripe")
    if denied is not None:
        return _restripe(denied)
    path = path.strip("/")
    outbox: list = []
    try:
        for pattern, methods in ROUTES:
            m = pattern.fullmatch(path)
            if m is None:
                continue
            handler = methods.get(request.method)
            if handler is None:
                raise ApiError(405, f"Unrecognized request URL ({request.method}: /{path}). Please see "
                                    f"https://stripe.com/docs or we can help at https://support.stripe.com/.")
            if request.method == "POST":
                media = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                if request.body and media not in ("application/x-www-form-urlencoded", ""):
                    raise ApiError(400, "Invalid request: Stripe's v1 API takes form-encoded parameters "
                                        "(application/x-www-form-urlencoded).")
                params = decode_params(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
            else:
                params = decode_params(request.GET.items())
            _lose_targeted(request, path)
            key = request.headers.get("Idempotency-Key", "") if request.method == "POST" else ""
            if key:
                if len(key) > 255:
                    raise ApiError(400, "Idempotency-Key must be at most 255 characters.", param="Idempotency-Key")
                resp = _idempotent(request, key, path, params, handler, m, outbox)
            else:
                resp = _execute(handler, request, params, m, outbox)
            break
        else:
            raise ApiError(404, f"Unrecognized request URL ({request.method}: /{path}). Please see "
                                f"https://stripe.com/docs or we can help at https://support.stripe.com/.")
    except ApiError as exc:
        return exc.response()
    request_key = request.headers.get("Idempotency-Key", "") or None
    for event_type, obj in outbox:
        emit(event_type, obj, request_id=resp["Request-Id"], idempotency_key=request_key)
    return resp


# ------------------------------------------------------------------ webhooks


def webhook_config() -> dict:
    """Where events go: SandboxSystem("stripe").settings, else HANDOFF_PUBLIC_URL's Stripe callback."""
    from apps.core.demo import INBOUND_SECRETS

    s = system_config("stripe").settings or {}
    return {"url": s.get("webhook_url") or settings.HANDOFF_PUBLIC_URL.rstrip("/") + "/api/v1/callbacks/stripe/",
            "secret": s.get("webhook_secret") or INBOUND_SECRETS["stripe"],
            "mode": s.get("webhook_mode") or "send", "enabled_events": s.get("enabled_events") or ENABLED_EVENTS}


def configure_webhooks(*, url: str | None = None, secret: str | None = None, mode: str | None = None,
                       enabled_events: list[str] | None = None) -> None:
    """Point the sandbox's webhook endpoint somewhere (tests: the live server), or hold events ("hold")."""
    cfg = system_config("stripe")
    s = dict(cfg.settings or {})
    for k, v in (("webhook_url", url), ("webhook_secret", secret), ("webhook_mode", mode),
                 ("enabled_events", enabled_events)):
        if v is not None:
            s[k] = v
    SandboxSystem.objects.filter(pk=cfg.pk).update(settings=s)


def lose_next(method: str, path_prefix: str, count: int = 1) -> None:
    """Serve the next `count` calls `method /path_prefix…` in full, then lose their answers (a deterministic
    lost response for one call, e.g. lose_next("POST", "/v1/invoices"))."""
    cfg = system_config("stripe")
    SandboxSystem.objects.filter(pk=cfg.pk).update(
        settings={**(cfg.settings or {}), "lose_next": {"method": method, "path": path_prefix, "count": count}})


def signature_header(secret: str, payload: str, timestamp: int | None = None) -> str:
    """Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<payload>" keyed with the endpoint secret>."""
    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{ts}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def emit(event_type: str, obj: dict, *, request_id: str | None = None, idempotency_key: str | None = None) -> dict:
    """Store an event carrying the object as it is now, and deliver it unless held or not subscribed."""
    event = {"id": new_id("event"), "object": "event", "api_version": API_VERSION, "created": now(),
             "data": {"object": json.loads(json.dumps(obj))}, "livemode": False, "pending_webhooks": 1,
             "request": {"id": request_id, "idempotency_key": idempotency_key}, "type": event_type}
    cfg = webhook_config()
    subscribed = "*" in cfg["enabled_events"] or event_type in cfg["enabled_events"]
    SandboxObject.objects.create(system="stripe", object_type="event", external_key=event["id"],
                                 data={"event": event, "delivered": False, "subscribed": subscribed,
                                       "deliveries": []})
    if subscribed and cfg["mode"] == "send":
        deliver_event(event["id"])
    return event


def deliver_event(event_id: str, *, url: str | None = None, secret: str | None = None,
                  timestamp: int | None = None) -> requests.Response | None:
    """(Re)send a stored event exactly as Stripe does: the same id and body, signed now (or at `timestamp`)."""
    obj = SandboxObject.objects.get(system="stripe", object_type="event", external_key=event_id)
    cfg = webhook_config()
    payload = json.dumps(obj.data["event"], indent=2)
    headers = {"Content-Type": "application/json; charset=utf-8",
               "Stripe-Signature": signature_header(secret or cfg["secret"], payload, timestamp),
               "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"}
    try:
        resp = requests.post(url or cfg["url"], data=payload.encode(), headers=headers, timeout=10)
        status = resp.status_code
    except requests.RequestException as exc:
        log.info("stripe sandbox: webhook %s not delivered: %s", event_id, exc)
        resp, status = None, None
    obj.data["deliveries"] = [*obj.data.get("deliveries", []), {"at": now(), "status": status}][-20:]
    obj.data["delivered"] = obj.data.get("delivered") or (status is not None and 200 <= status < 300)
    obj.save(update_fields=["data"])
    return resp


def undelivered_events() -> list[dict]:
    """Events stored but not yet answered 2xx by the endpoint, oldest first."""
    return [o.data["event"] for o in SandboxObject.objects.filter(
        system="stripe", object_type="event", data__delivered=False, data__subscribed=True).order_by("pk")]


def events_for(object_id: str, event_type: str | None = None) -> list[dict]:
    """Stored events whose object is `object_id`, oldest first."""
    qs = SandboxObject.objects.filter(system="stripe", object_type="event", data__event__data__object__id=object_id)
    if event_type:
        qs = qs.filter(data__event__type=event_type)
    return [o.data["event"] for o in qs.order_by("pk")]


def open_dispute(invoice_id: str, reason: str = "fraudulent") -> dict:
    """A customer disputes the payment of a paid invoice (what a bank does): charge.dispute.created is emitted."""
    payment = SandboxObject.objects.filter(system="stripe", object_type="invoice_payment",
                                           data__invoice=invoice_id).order_by("-pk").first()
    if payment is None:
        raise ValueError(f"invoice {invoice_id} has no payment to dispute")
    charge = SandboxObject.objects.get(system="stripe", object_type="charge",
                                       data__payment_intent=payment.data["payment"]["payment_intent"])
    dispute = _dispute(charge.data, reason)
    emit("charge.dispute.created", dispute)
    return dispute
