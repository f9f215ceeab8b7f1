"""Sandbox side of time & expense to billing.

NetSuite: `timebill` (Track Time) and `charge` (SuiteBilling charge) records, upserted by external id at
`PUT /services/rest/record/v1/<type>/eid:<externalId>` and read back with GET (views.NETSUITE_VALIDATORS). They
are validated as NetSuite would: required fields, H:MM durations, charge stages, a service item on billable
lines, and reference keys that must exist — the project (job) billed, and the department, class, location,
subsidiary and item, checked against the sandbox account's segments (apps/sandbox/netsuite_reference.py). A
refusal is a 400 whose `o:errorDetails` names the field (`o:errorPath`), e.g. "Invalid department reference key
999.".

Kantata: `GET /api/v1/time_entries.json` and `GET /api/v1/expenses.json` list what the PSA published (Kantata's
indexed response shape), and `publish()` is the PSA sending its signed webhook (Standard Webhooks, the Kantata
connection's inbound secret) to Handoff's callback URL — used by the tests, the demo and the benchmark.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import date, datetime, timezone as dt_tz

import requests

from apps.connectors.standard_webhooks.signature import signed_headers

from . import views
from .faults import error, json_response
from .models import SandboxObject
from .netsuite_reference import SEGMENTS  # the sandbox NetSuite account's segments: internal id → name

CHARGE_STAGES = ("HOLD_FOR_BILLING", "NON_BILLABLE", "READY_FOR_BILLING", "PROCESSED")
DURATION = re.compile(r"(\d{1,2}):([0-5]\d)")
AMOUNT = re.compile(r"-?\d{1,13}(\.\d{1,8})?")


def _ref_key(data: dict, key: str) -> str:
    ref = data.get(key)
    if not isinstance(ref, dict):
        return ""
    return str(ref.get("id") or ref.get("externalId") or "").strip()


def _required(data: dict, fields: list[tuple[str, str]]):
    for key, label in fields:
        value = data.get(key)
        if value in (None, "", {}) or (isinstance(value, dict) and not _ref_key(data, key)):
            return f"Please enter value(s) for: {label}", key
    return None


def _segments(data: dict, keys: tuple[str, ...]):
    for key in keys:
        if key not in data or data[key] is None:
            continue
        rid = str((data[key] or {}).get("id", "")) if isinstance(data[key], dict) else str(data[key])
        if rid not in SEGMENTS["item" if key == "billingItem" else key]:
            return f"Invalid {key} reference key {rid}.", key
    return None


def _project_exists(data: dict, key: str) -> bool:
    ref = data.get(key) or {}
    qs = SandboxObject.objects.filter(system="netsuite", object_type="job")
    if ref.get("id"):
        return str(ref["id"]).isdigit() and qs.filter(pk=int(ref["id"])).exists()
    return qs.filter(external_key=str(ref.get("externalId", ""))).exists()


def _date(data: dict, key: str):
    try:
        date.fromisoformat(str(data.get(key)))
    except ValueError:
        return f"Invalid date value for {key}: {data.get(key)!r} (use YYYY-MM-DD).", key
    return None


def validate_timebill(data: dict):
    """NetSuite's checks on a time bill (Track Time) record."""
    problem = _required(data, [("tranDate", "Date"), ("employee", "Employee"), ("customer", "Customer:Project"),
                               ("hours", "Duration"), ("subsidiary", "Subsidiary")]) or _date(data, "tranDate")
    if problem:
        return problem
    m = DURATION.fullmatch(str(data["hours"]))
    if not m or int(m.group(1)) * 60 + int(m.group(2)) > 24 * 60:
        return f"Invalid duration {data['hours']!r}: use H:MM, at most 24:00.", "hours"
    if data.get("isBillable"):
        if not _ref_key(data, "item"):
            return "Please enter value(s) for: Service Item", "item"
        if not AMOUNT.fullmatch(str(data.get("rate", ""))) or str(data.get("rate", "")).startswith("-"):
            return f"Invalid rate {data.get('rate')!r}.", "rate"
    problem = _segments(data, ("subsidiary", "department", "class", "location", "item"))
    if problem:
        return problem
    if not _project_exists(data, "customer"):
        return f"Invalid customer reference key {_ref_key(data, 'customer')}.", "customer"
    return None


def validate_charge(data: dict):
    """NetSuite's checks on a SuiteBilling charge."""
    problem = _required(data, [("billTo", "Bill To"), ("chargeDate", "Charge Date"), ("stage", "Stage"),
                               ("amount", "Amount"), ("subsidiary", "Subsidiary")]) or _date(data, "chargeDate")
    if problem:
        return problem
    if data["stage"] not in CHARGE_STAGES:
        return f"Invalid stage {data['stage']!r}: use one of {', '.join(CHARGE_STAGES)}.", "stage"
    if not AMOUNT.fullmatch(str(data["amount"])) or str(data["amount"]).startswith("-"):
        return f"Invalid amount {data['amount']!r}.", "amount"
    if data["stage"] == "READY_FOR_BILLING" and not _ref_key(data, "billingItem"):
        return "Please enter value(s) for: Billing Item", "billingItem"
    problem = _segments(data, ("subsidiary", "department", "class", "location", "billingItem"))
    if problem:
        return problem
    if not _project_exists(data, "billTo"):
        return f"Invalid billTo reference key {_ref_key(data, 'billTo')}.", "billTo"
    return None


views.NETSUITE_VALIDATORS["timebill"] = validate_timebill
views.NETSUITE_VALIDATORS["charge"] = validate_charge


# ------------------------------------------------------------------ Kantata: listing what was published

OBJECT_TYPES = {"time_entries": "time_entry", "expenses": "expense"}


def kantata_list(request, match):
    """GET /api/v1/time_entries.json | /api/v1/expenses.json[?workspace_id=…&page=…&per_page=…]"""
    if request.method != "GET":
        return error("kantata", 405, "Method not allowed", "method")
    key = match.group(1)
    qs = SandboxObject.objects.filter(system="kantata", object_type=OBJECT_TYPES[key]).order_by("pk")
    if request.GET.get("workspace_id"):
        qs = qs.filter(data__workspace_id=request.GET["workspace_id"])
    try:
        per_page = min(max(int(request.GET.get("per_page", 20)), 1), 200)
        page = max(int(request.GET.get("page", 1)), 1)
    except ValueError:
        return error("kantata", 400, "page and per_page must be numbers", "parameter")
    total = qs.count()
    objs = list(qs[(page - 1) * per_page: page * per_page])
    return json_response({
        "count": total, "results": [{"key": key, "id": o.external_key} for o in objs],
        key: {o.external_key: o.data for o in objs},
        "meta": {"count": total, "page_count": max(1, -(-total // per_page)), "page_number": page,
                 "page_size": per_page}})


views.KANTATA_ROUTES.append((re.compile(r"api/v1/(time_entries|expenses)\.json"), kantata_list))


# ------------------------------------------------------------------ Kantata: publishing (the PSA's webhook)


def iso(dt: datetime | None = None) -> str:
    return (dt or datetime.now(dt_tz.utc)).astimezone(dt_tz.utc).isoformat().replace("+00:00", "Z")


def time_entry(entry_id, workspace_id, *, date_performed: str, minutes: int, role: str, service_code: str,
               user_id=501, user_name: str = "Jane Doe", billable: bool = True, task_billable: bool = True,
               write_off_minutes: int = 0, rate_in_cents: int | None = None, currency: str = "",
               story_title: str = "Delivery", notes: str = "", updated_at: str | None = None,
               approved: bool = True) -> dict:
    """A Kantata API v1 time entry, with the fields the firm's Kantata carries for Handoff."""
    return {"id": str(entry_id), "workspace_id": str(workspace_id), "story_id": "9001", "story_title": story_title,
            "user_id": str(user_id), "user_name": user_name, "date_performed": date_performed,
            "time_in_minutes": minutes, "billable": billable, "task_billable": task_billable,
            "write_off_minutes": write_off_minutes, "rate_in_cents": rate_in_cents, "currency": currency,
            "approved": approved, "role_name": role, "service_code": service_code, "notes": notes,
            "created_at": updated_at or iso(), "updated_at": updated_at or iso()}


def expense(expense_id, workspace_id, *, date_spent: str, amount_in_cents: int, currency: str, category: str,
            service_code: str, user_id=501, user_name: str = "Jane Doe", billable: bool = True, notes: str = "",
            updated_at: str | None = None, approved: bool = True) -> dict:
    """A Kantata API v1 expense."""
    return {"id": str(expense_id), "workspace_id": str(workspace_id), "user_id": str(user_id),
            "user_name": user_name, "date": date_spent, "category": category, "amount_in_cents": amount_in_cents,
            "currency": currency, "billable": billable, "approved": approved, "service_code": service_code,
            "notes": notes, "created_at": updated_at or iso(), "updated_at": updated_at or iso()}


def envelope(event_type: str, data: dict, timestamp: str | None = None) -> dict:
    return {"type": event_type, "timestamp": timestamp or iso(), "data": data}


def store(event_type: str, data: dict) -> None:
    """Keep the PSA's own copy (what GET …/time_entries.json lists): a deletion removes it."""
    object_type = "time_entry" if event_type.startswith("time_entry.") else "expense"
    key = str(data["id"])
    if event_type.endswith(".deleted"):
        SandboxObject.objects.filter(system="kantata", object_type=object_type, external_key=key).delete()
        return
    SandboxObject.objects.update_or_create(system="kantata", object_type=object_type, external_key=key,
                                           defaults={"data": data})


def publish(event_type: str, data: dict, *, handoff_url: str, slug: str = "kantata", secret: str | None = None,
            event_id: str | None = None, timestamp: str | None = None, session: requests.Session | None = None,
            keep: bool = True, times: int = 1) -> list[requests.Response]:
    """Kantata sends one signed webhook for `data` to Handoff (`times` deliveries of the same message, as a
    sender's retries would). Returns the responses."""
    if secret is None:
        from apps.sync.models import Connection

        secret = Connection.objects.get(slug=slug).inbound_secret
    if keep:
        store(event_type, data)
    body = json.dumps(envelope(event_type, data, timestamp)).encode()
    msg_id = event_id or f"msg_{uuid.uuid4().hex}"
    http = session or requests
    url = f"{handoff_url.rstrip('/')}/api/v1/callbacks/{slug}/"
    return [http.post(url, data=body, headers=signed_headers(secret, msg_id, body), timeout=10)
            for _ in range(times)]
