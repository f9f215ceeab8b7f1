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
- Webhooks: state changes go to the request's outbox and are emitted once it has committed (webhooks.py).
- Test payment methods (payments.py): `pm_card_visa` (default) pays; `pm_card_chargeDeclined` fails (402
  card_declined, event invoice.payment_failed); `pm_card_createDispute` pays and then opens a dispute
  (charge.dispute.created).
- A targeted fault for deterministic tests: `lose_next(method, path_prefix, count)` serves the next matching
  call in full, then loses its response (as faults' lost_response_rate does, but for one call).
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qsl

from django.db import IntegrityError, transaction
from django.http import HttpResponse

from ..faults import check, hang_seconds, system_config
from ..http import sandbox_view
from ..models import SandboxObject, SandboxSystem
from .api import ApiError, decode_params, error_response, respond, simple_get
from .customers import customer, customer_search, customers
from .invoices import close, finalize, invoice, invoice_search, invoiceitem, invoiceitems, invoices
from .payments import invoice_payments, pay
from .webhooks import emit, events

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
    (re.compile(r"v1/invoices/(in_\w+)/void"), {"POST": close("void")}),
    (re.compile(r"v1/invoices/(in_\w+)/mark_uncollectible"), {"POST": close("mark_uncollectible")}),
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
        return respond(json.loads(row.data["body"]), row.data["status"], {"Idempotent-Replayed": "true",
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


def lose_next(method: str, path_prefix: str, count: int = 1) -> None:
    """Serve the next `count` calls `method /path_prefix…` in full, then lose their answers (a deterministic
    lost response for one call, e.g. lose_next("POST", "/v1/invoices"))."""
    cfg = system_config("stripe")
    SandboxSystem.objects.filter(pk=cfg.pk).update(
        settings={**(cfg.settings or {}), "lose_next": {"method": method, "path": path_prefix, "count": count}})
