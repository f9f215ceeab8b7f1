"""Sandbox billing: NetSuite invoices and customer payments (REST record service), Kantata milestones (stories),
and the signed callbacks both systems send to Handoff.

NetSuite
- `PUT /services/rest/record/v1/invoice/eid:<externalId>` upserts an invoice (204 + Location), `GET …/invoice/<id>`
  or `…/eid:<externalId>` reads it, `GET …/invoice` lists. The sandbox is the ERP: it numbers the invoice
  (`tranId`), totals its lines (`item.items`, each line rounded), and keeps `amountPaid`, `amountRemaining`,
  `status` ({"id": "open"|"paidInFull", "refName": …}) and `lastModifiedDate`.
- `customerPayment` (POST, PUT eid:, GET): a payment from a customer applied to invoices (`apply.items[].doc.id`,
  `amount`); applying it reduces the invoices' amountRemaining (status "paidInFull" at 0).
- Like the SuiteScript user-event a firm deploys (afterSubmit), every saved invoice or payment is sent to Handoff
  as a Standard Webhooks callback: `{"type": "invoice.created"|"invoice.updated"|"customerpayment.created",
  "timestamp", "data": <the record as GET returns it>}` signed with the connection's secret
  (demo.INBOUND_SECRETS["netsuite"]) to `configure_callbacks(...)`'s URL (default HANDOFF_PUBLIC_URL). Mode
  "hold" only stores them (SandboxObject "webhook_event"), for a test to deliver in any order.

Kantata
- `GET/POST /api/v1/stories.json`, `GET/PUT /api/v1/stories/<id>.json` (stories of a workspace; milestones are
  stories with story_type "milestone"). Setting a milestone's state to "completed" sends `story.completed`.
- `publish_story_completed(story, …)` signs and sends a story.completed callback (tests and demo traffic).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import date, datetime, timezone as dt_tz
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

import requests
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.http import HttpResponse

from apps.connectors.standard_webhooks.signature import signed_headers

from .faults import error, json_response, system_config
from .models import SandboxObject, SandboxSystem
from .views import KANTATA_ROUTES, NETSUITE_ROUTES, NETSUITE_VALIDATORS

log = logging.getLogger("handoff.sandbox")

RECORD = "services/rest/record/v1"
STATUS = {"open": {"id": "open", "refName": "Open"}, "paidInFull": {"id": "paidInFull", "refName": "Paid In Full"}}


def _now_text() -> str:
    return datetime.now(dt_tz.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _money(value) -> Decimal | None:
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError, TypeError):
        return None
    return d if d.is_finite() else None


def _round(d: Decimal) -> Decimal:
    return d.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


# ------------------------------------------------------------------ validators (also used by the generic routes)


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


NETSUITE_VALIDATORS["invoice"] = validate_invoice
NETSUITE_VALIDATORS["customerPayment"] = validate_payment


# ------------------------------------------------------------------ NetSuite records


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


def _record_json(obj: SandboxObject) -> dict:
    return {"id": str(obj.pk), "externalId": obj.external_key, **obj.data}


def upsert_invoice(external_id: str | None, data: dict, pk: int | None = None) -> tuple[SandboxObject, bool]:
    """Create or update the invoice with this external id (or internal id `pk`; neither: create)."""
    now = _now_text()
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
    now = _now_text()
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


def _netsuite_record(request, match):
    rtype, ref = match.group(1), match.group(2)
    base = request.build_absolute_uri(f"/sandbox/netsuite/{RECORD}/{rtype}/")
    if ref is None:
        if request.method == "GET":
            objs = list(SandboxObject.objects.filter(system="netsuite", object_type=rtype).order_by("pk")[
                        :min(int(request.GET.get("limit", 1000) or 1000), 1000)])
            return json_response({"links": [], "count": len(objs), "hasMore": False, "offset": 0,
                                  "totalResults": len(objs),
                                  "items": [{"id": str(o.pk), "links": []} for o in objs]})
        if request.method != "POST":
            return error("netsuite", 405, "Method not allowed", "INVALID_REQUEST")
    lookup = None if ref is None else ({"external_key": ref[4:]} if ref.startswith("eid:") else {"pk": int(ref)})
    if request.method == "GET":
        obj = SandboxObject.objects.filter(system="netsuite", object_type=rtype, **lookup).first()
        if obj is None:
            return error("netsuite", 404, f"Record {ref} was not found.", "NONEXISTENT_ID")
        return json_response(_record_json(obj))
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
        existing = SandboxObject.objects.filter(system="netsuite", object_type=rtype, **lookup).first()
        if existing is None:
            return error("netsuite", 404, f"Record {ref} was not found.", "NONEXISTENT_ID")
        data = {**existing.data, **data}
    problem = NETSUITE_VALIDATORS[rtype](data)
    if problem:
        return error("netsuite", 400, problem[0], "INVALID_KEY_OR_REF" if "Invalid Field Value" in problem[0]
                     else "USER_ERROR", problem[1])
    if rtype == "invoice":
        obj, created = upsert_invoice(external_id, data, pk=existing.pk if existing else None)
        send_callback("invoice.created" if created else "invoice.updated", _record_json(obj))
    else:
        obj = apply_payment(data, external_id)
        send_callback("customerpayment.created", _record_json(obj))
        for a in obj.data["apply"]["items"]:
            inv = SandboxObject.objects.get(system="netsuite", object_type="invoice", pk=int(a["doc"]["id"]))
            send_callback("invoice.updated", _record_json(inv))
    resp = HttpResponse(status=204)
    resp["Location"] = f"{base}{obj.pk}"
    return resp


NETSUITE_ROUTES.append((re.compile(rf"{RECORD}/(invoice|customerPayment)(?:/(eid:[\w.\-:]+|\d+))?/?"),
                        _netsuite_record))


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
    send_callback("customerpayment.created", _record_json(payment))
    inv.refresh_from_db()
    send_callback("invoice.updated", _record_json(inv))
    return payment


# ------------------------------------------------------------------ signed callbacks (Standard Webhooks)


def callback_config(system: str) -> dict:
    from apps.core.demo import INBOUND_SECRETS

    s = system_config(system).settings or {}
    return {"url": s.get("webhook_url") or f"{settings.HANDOFF_PUBLIC_URL.rstrip('/')}/api/v1/callbacks/{system}/",
            "secret": s.get("webhook_secret") or INBOUND_SECRETS[system], "mode": s.get("webhook_mode") or "send"}


def configure_callbacks(system: str, *, url: str | None = None, secret: str | None = None,
                        mode: str | None = None) -> None:
    """Where the NetSuite / Kantata sandbox sends its callbacks (tests: the live server), or "hold" them."""
    cfg = system_config(system)
    s = dict(cfg.settings or {})
    for k, v in (("webhook_url", url), ("webhook_secret", secret), ("webhook_mode", mode)):
        if v is not None:
            s[k] = v
    SandboxSystem.objects.filter(pk=cfg.pk).update(settings=s)


def send_callback(event_type: str, data: dict, *, system: str = "netsuite", msg_id: str | None = None,
                  timestamp: str | None = None) -> dict:
    """Store the callback and send it (unless the system's callbacks are held). Returns the stored message."""
    cfg = callback_config(system)
    msg = {"id": msg_id or f"msg_{uuid.uuid4().hex}", "envelope": {
        "type": event_type, "timestamp": timestamp or _now_text(), "data": json.loads(json.dumps(data, default=str))},
           "delivered": False, "deliveries": []}
    obj = SandboxObject.objects.create(system=system, object_type="webhook_event", external_key=msg["id"], data=msg)
    if cfg["mode"] == "send":
        deliver_callback(obj.external_key, system=system)
    return msg


def deliver_callback(msg_id: str, *, system: str = "netsuite", url: str | None = None, times: int = 1,
                     secret: str | None = None, timestamp: int | None = None) -> list:
    """(Re)send a stored callback `times` times: the same webhook-id and body each time, signed now."""
    obj = SandboxObject.objects.get(system=system, object_type="webhook_event", external_key=msg_id)
    cfg = callback_config(system)
    body = json.dumps(obj.data["envelope"]).encode()
    out = []
    for _ in range(times):
        headers = signed_headers(secret or cfg["secret"], msg_id, body, timestamp)
        try:
            resp = requests.post(url or cfg["url"], data=body, headers=headers, timeout=10)
            status = resp.status_code
        except requests.RequestException as exc:
            log.info("%s sandbox: callback %s not delivered: %s", system, msg_id, exc)
            resp, status = None, None
        out.append(resp)
        obj.data["deliveries"] = [*obj.data.get("deliveries", []), {"status": status}][-20:]
        obj.data["delivered"] = obj.data.get("delivered") or (status is not None and 200 <= status < 300)
    obj.save(update_fields=["data"])
    return out


def held_callbacks(system: str = "netsuite") -> list[dict]:
    """Stored, undelivered callbacks, oldest first: [{"id", "envelope"}]."""
    return [{"id": o.external_key, "envelope": o.data["envelope"]}
            for o in SandboxObject.objects.filter(system=system, object_type="webhook_event",
                                                  data__delivered=False).order_by("pk")]


# ------------------------------------------------------------------ Kantata stories (milestones)


def _story_json(obj: SandboxObject) -> dict:
    return {"id": str(obj.pk), **obj.data}


def _story_list(objs) -> dict:
    return {"count": len(objs), "results": [{"key": "stories", "id": str(o.pk)} for o in objs],
            "stories": {str(o.pk): _story_json(o) for o in objs},
            "meta": {"count": len(objs), "page_count": 1, "page_number": 1, "page_size": 20}}


STORY_FIELDS = ("title", "workspace_id", "story_type", "state", "price", "budget_estimate_in_cents", "currency",
                "due_date", "description")


def save_story(fields: dict, story_id: str | int | None = None) -> tuple[SandboxObject, bool]:
    """Create or update a Kantata story; returns (story, just_completed)."""
    now = _now_text()
    with transaction.atomic():
        if story_id is None:
            obj = SandboxObject.objects.create(system="kantata", object_type="story",
                                               data={"state": "not started", "story_type": "task",
                                                     "created_at": now})
            before = None
        else:
            obj = SandboxObject.objects.select_for_update().get(system="kantata", object_type="story", pk=int(story_id))
            before = obj.data.get("state")
        obj.data.update({k: fields[k] for k in STORY_FIELDS if k in fields})
        obj.data["updated_at"] = now
        done = obj.data.get("state") == "completed" and before != "completed"
        if done:
            obj.data["completed_at"] = now
        if story_id is not None:
            obj.writes = F("writes") + 1
        obj.save()
        obj.refresh_from_db()
    return obj, done and obj.data.get("story_type") == "milestone"


def _kantata_stories(request, match):
    story_id = match.group(1)
    if request.method == "GET":
        if story_id:
            obj = SandboxObject.objects.filter(system="kantata", object_type="story", pk=int(story_id)).first()
            if obj is None:
                return error("kantata", 404, f"Story {story_id} not found", "not_found")
            return json_response(_story_list([obj]))
        qs = SandboxObject.objects.filter(system="kantata", object_type="story").order_by("pk")
        if request.GET.get("workspace_id"):
            qs = qs.filter(data__workspace_id=request.GET["workspace_id"])
        return json_response(_story_list(list(qs[:200])))
    if request.method not in ("POST", "PUT"):
        return error("kantata", 405, "Method not allowed", "method")
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return error("kantata", 400, "Malformed JSON body", "parameter")
    story = body.get("story") if isinstance(body, dict) else None
    if not isinstance(story, dict):
        return error("kantata", 400, "story is required", "parameter")
    if request.method == "POST" and (story_id or not (story.get("title") or "").strip()):
        return error("kantata", 422, "Title can't be blank", "validation", "title")
    if request.method == "POST" and not story.get("workspace_id"):
        return error("kantata", 422, "Workspace can't be blank", "validation", "workspace_id")
    if request.method == "PUT" and not story_id:
        return error("kantata", 404, "No route matches", "not_found")
    if story_id and not SandboxObject.objects.filter(system="kantata", object_type="story", pk=int(story_id)).exists():
        return error("kantata", 404, f"Story {story_id} not found", "not_found")
    obj, completed = save_story(story, story_id)
    if completed:
        publish_story_completed(_story_json(obj))
    return json_response(_story_list([obj]))


KANTATA_ROUTES.append((re.compile(r"api/v1/stories(?:/(\d+))?\.json"), _kantata_stories))


def publish_story_completed(story: dict, *, msg_id: str | None = None) -> dict:
    """Send (or hold) Kantata's signed story.completed callback for a milestone story."""
    return send_callback("story.completed", story, system="kantata", msg_id=msg_id)


def complete_milestone(story_id: str | int) -> dict:
    """Mark a milestone story completed in the PSA (as a project manager does); the callback goes to Handoff."""
    obj, completed = save_story({"state": "completed"}, story_id)
    story = _story_json(obj)
    if completed:
        publish_story_completed(story)
    return story
