"""Kantata workspaces (projects): `GET` / `POST /api/v1/workspaces.json` list and create them, `GET` / `PUT
/api/v1/workspaces/{id}.json` read one and update its budget and dates (change orders: `{"workspace": {"price",
"budgeted", "start_date", "due_date", …}}`), answered in Kantata's indexed shape; a bad price or a due date before
the start date is a 422 naming the field, an unknown id a 404.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal, InvalidOperation

from django.db import transaction
from django.db.models import F

from ..faults import error, json_response
from ..http import read_json
from ..models import SandboxObject


def workspace_list(objs) -> dict:
    return {"count": len(objs), "results": [{"key": "workspaces", "id": str(o.pk)} for o in objs],
            "workspaces": {str(o.pk): {"id": str(o.pk), **o.data} for o in objs},
            "meta": {"count": len(objs), "page_count": 1, "page_number": 1, "page_size": 20}}


def workspaces(request, match):
    """GET / POST /api/v1/workspaces.json: list (search, per_page) or create a workspace."""
    if request.method == "GET":
        qs = SandboxObject.objects.filter(system="kantata", object_type="workspace").order_by("pk")
        if request.GET.get("search"):
            qs = qs.filter(data__title__icontains=request.GET["search"])
        per_page = min(int(request.GET.get("per_page", 20) or 20), 200)
        return json_response(workspace_list(list(qs[:per_page])))
    if request.method == "POST":
        data, err = read_json(request)
        ws = (data or {}).get("workspace") if isinstance(data, dict) else None
        if err or not isinstance(ws, dict):
            return error("kantata", 400, err or "workspace is required", "parameter")
        if not (ws.get("title") or "").strip():
            return error("kantata", 422, "Title can't be blank", "validation", "title")
        if ws.get("creator_role") not in ("maven", "buyer"):
            return error("kantata", 422, "Creator role must be maven or buyer", "validation", "creator_role")
        obj = SandboxObject.objects.create(system="kantata", object_type="workspace", data=ws)
        return json_response(workspace_list([obj]))
    return error("kantata", 405, "Method not allowed", "method")


def _date(value) -> date | None | str:
    if value in (None, ""):
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        return "invalid"


def workspace(request, match):
    """GET / PUT /api/v1/workspaces/{id}.json: read a workspace, or update its budget and dates."""
    ws_id = match.group(1)
    if request.method not in ("GET", "PUT"):
        return error("kantata", 405, "Method not allowed", "method")
    if request.method == "GET":
        obj = SandboxObject.objects.filter(system="kantata", object_type="workspace", pk=ws_id).first()
        if obj is None:
            return error("kantata", 404, f"Couldn't find Workspace with id={ws_id}", "not_found")
        return json_response(workspace_list([obj]))
    data, err = read_json(request)
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
    return json_response(workspace_list([obj]))
