"""Sandbox side of change orders.

Kantata: `GET` / `PUT /api/v1/workspaces/{id}.json` — read a workspace, update its budget and dates
(`{"workspace": {"price", "budgeted", "start_date", "due_date", …}}`), answered in Kantata's indexed shape; a bad
price or a due date before the start date is a 422 naming the field, an unknown id a 404.

NetSuite: `billingSchedule` records, upserted by external id (`PUT …/record/v1/billingSchedule/eid:<id>`) and
read back, validated as NetSuite would: a name, a known schedule type, and a frequency for every type but
milestone schedules.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal, InvalidOperation

from django.db import transaction
from django.db.models import F

from . import views
from .faults import error, json_response
from .models import SandboxObject

SCHEDULE_TYPES = ("STANDARD", "FIXED_BID_INTERVAL", "FIXED_BID_MILESTONE", "TIME_AND_MATERIAL")
FREQUENCIES = ("DAILY", "WEEKLY", "BIWEEKLY", "MONTHLY", "QUARTERLY", "SEMIANNUALLY", "ANNUALLY")


def _ref(data: dict, key: str) -> str:
    value = data.get(key)
    return str(value.get("id") or "").strip() if isinstance(value, dict) else ""


def validate_billing_schedule(data: dict):
    if not str(data.get("name") or "").strip():
        return ("Please enter value(s) for: Name", "name")
    if len(str(data["name"])) > 100:
        return ("Name: the value is longer than 100 characters.", "name")
    stype = _ref(data, "scheduleType")
    if not stype:
        return ("Please enter value(s) for: Schedule Type", "scheduleType")
    if stype not in SCHEDULE_TYPES:
        return (f"Invalid scheduleType reference key {stype}.", "scheduleType")
    freq = _ref(data, "frequency")
    if stype != "FIXED_BID_MILESTONE":
        if not freq:
            return ("Please enter value(s) for: Frequency", "frequency")
        if freq not in FREQUENCIES:
            return (f"Invalid frequency reference key {freq}.", "frequency")
    if "inArrears" in data and not isinstance(data["inArrears"], bool):
        return ("In Arrears must be true or false.", "inArrears")
    return None


def _date(value) -> date | None | str:
    if value in (None, ""):
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        return "invalid"


def workspace(request, match):
    ws_id = match.group(1)
    if request.method not in ("GET", "PUT"):
        return error("kantata", 405, "Method not allowed", "method")
    if request.method == "GET":
        obj = SandboxObject.objects.filter(system="kantata", object_type="workspace", pk=ws_id).first()
        if obj is None:
            return error("kantata", 404, f"Couldn't find Workspace with id={ws_id}", "not_found")
        return json_response(views._kantata_list([obj]))
    data, err = views._body(request)
    ws = (data or {}).get("workspace") if isinstance(data, dict) else None
    if err or not isinstance(ws, dict):
        return error("kantata", 400, err or "workspace is required", "parameter")
    with transaction.atomic():
        obj = SandboxObject.objects.select_for_update().filter(system="kantata", object_type="workspace",
                                                               pk=ws_id).first()
        if obj is None:
            return error("kantata", 404, f"Couldn't find Workspace with id={ws_id}", "not_found")
        if "title" in ws and not str(ws["title"] or "").strip():
            return error("kantata", 422, "Title can't be blank", "validation", "title")
        if "price" in ws:
            try:
                price = Decimal(str(ws["price"]))
                if not price.is_finite() or price < 0:
                    raise InvalidOperation
            except (InvalidOperation, ValueError):
                return error("kantata", 422, "Price must be a positive number", "validation", "price")
        merged = {**obj.data, **ws}
        start, due = _date(merged.get("start_date")), _date(merged.get("due_date"))
        for name, value in (("start_date", start), ("due_date", due)):
            if value == "invalid":
                return error("kantata", 422, f"{name.replace('_', ' ').capitalize()} is not a valid date",
                             "validation", name)
        if start and due and due < start:
            return error("kantata", 422, "Due date must be on or after the start date", "validation", "due_date")
        obj.data = merged
        obj.writes = F("writes") + 1
        obj.save()
        obj.refresh_from_db()
    return json_response(views._kantata_list([obj]))


views.KANTATA_ROUTES.append((re.compile(r"api/v1/workspaces/(\d+)\.json"), workspace))
views.NETSUITE_VALIDATORS["billingSchedule"] = validate_billing_schedule
