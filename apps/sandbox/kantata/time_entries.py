"""Kantata time entries and expenses: what the PSA published, and the PSA publishing it.

`GET /api/v1/time_entries.json` and `GET /api/v1/expenses.json` list what the PSA published (Kantata's indexed
response shape), and `publish()` is the PSA sending its signed webhook (Standard Webhooks, the Kantata
connection's inbound secret) to Handoff's callback URL — used by the tests, the demo and the benchmark.
"""

from __future__ import annotations

import json
import uuid

import requests

from apps.connectors.standard_webhooks import signed_headers

from ..faults import error, json_response
from ..http import iso
from ..models import SandboxObject

OBJECT_TYPES = {"time_entries": "time_entry", "expenses": "expense"}


def listing(request, match):
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
