"""The sandboxes' HTTP endpoints: the same paths, fields, auth and error shapes as the vendors' REST APIs.

Mounted at /sandbox/<system>/… when HANDOFF_SANDBOX_ENABLED (demo and tests; never in production).
"""

from __future__ import annotations

import functools
import json
import re
from datetime import datetime, timezone as dt_tz

from django.contrib.auth.decorators import login_not_required
from django.db import IntegrityError, transaction
from django.db.models import F
from django.views.decorators.csrf import csrf_exempt

from .faults import check, error, hang, json_response
from .models import SandboxObject


def _body(request):
    try:
        return json.loads(request.body or b"{}"), None
    except ValueError:
        return None, "Malformed JSON body"


def _iso(dt) -> str:
    return dt.astimezone(dt_tz.utc).isoformat().replace("+00:00", "Z")


def sandbox_view(fn):
    @functools.wraps(fn)
    def view(request, *args, **kwargs):
        response = fn(request, *args, **kwargs)
        lose = getattr(request, "sandbox_lose_response", None)
        if lose:  # fault injection (faults.check): the work is done and committed, the answer comes too late
            hang(lose)
        return response

    return csrf_exempt(login_not_required(view))


# ------------------------------------------------------------------ HubSpot CRM v3


def _hs_object(obj: SandboxObject, properties: list[str] | None, associations: list[str]) -> dict:
    props = obj.data.get("properties", {})
    if properties:
        props = {k: props.get(k) for k in properties}
    out = {"id": str(obj.pk), "properties": {**props, "hs_object_id": str(obj.pk)}, "createdAt": _iso(obj.created_at),
           "updatedAt": _iso(obj.updated_at), "archived": False}
    assoc = {}
    for a in associations:
        ids = obj.data.get("associations", {}).get(a, [])
        if ids:
            kind = obj.object_type.rstrip("s") + "_to_" + a.rstrip("s")
            assoc[a] = {"results": [{"id": str(i), "type": kind} for i in ids]}
    if assoc:
        out["associations"] = assoc
    return out


@sandbox_view
def hubspot(request, path: str):
    if (denied := check(request, "hubspot")) is not None:
        return denied
    m = re.fullmatch(r"crm/v3/objects/(deals|companies)(?:/(\d+))?", path)
    if not m:
        return error("hubspot", 404, f"Unknown path /{path}")
    otype, oid = m.group(1), m.group(2)
    if request.method == "GET" and oid is None:  # list (HubSpot pages with `after`; the sandbox returns one page)
        limit = min(int(request.GET.get("limit", 10) or 10), 100)
        objs = SandboxObject.objects.filter(system="hubspot", object_type=otype).order_by("pk")[:limit]
        return json_response({"results": [_hs_object(o, None, []) for o in objs]})
    if request.method == "POST" and oid is None:
        data, err = _body(request)
        if err or not isinstance(data, dict):
            return error("hubspot", 400, err or "Body must be an object")
        assoc = {}
        for a in data.get("associations", []) or []:
            to_id = str((a.get("to") or {}).get("id", ""))
            target = "companies" if otype == "deals" else "deals"
            assoc.setdefault(target, []).append(to_id)
        obj = SandboxObject.objects.create(system="hubspot", object_type=otype,
                                           data={"properties": data.get("properties", {}), "associations": assoc})
        return json_response(_hs_object(obj, None, list(assoc)), 201)
    obj = SandboxObject.objects.filter(system="hubspot", object_type=otype, pk=oid).first() if oid else None
    if obj is None:
        return error("hubspot", 404, "Object not found.  objectId are usually numeric.")
    if request.method == "GET":
        props = [p for p in request.GET.get("properties", "").split(",") if p]
        assocs = [a for a in request.GET.get("associations", "").split(",") if a]
        return json_response(_hs_object(obj, props or None, assocs))
    if request.method == "PATCH":
        data, err = _body(request)
        if err or not isinstance(data, dict) or not isinstance(data.get("properties"), dict):
            return error("hubspot", 400, err or "Invalid input JSON: properties is required")
        with transaction.atomic():
            obj = SandboxObject.objects.select_for_update().get(pk=obj.pk)
            obj.data.setdefault("properties", {}).update({k: str(v) for k, v in data["properties"].items()})
            obj.writes += 1
            obj.save()
        return json_response(_hs_object(obj, None, []))
    return error("hubspot", 405, "Method not allowed")


# ------------------------------------------------------------------ Salesforce REST


@sandbox_view
def salesforce(request, path: str):
    if (denied := check(request, "salesforce")) is not None:
        return denied
    if re.fullmatch(r"services/data/v\d+\.\d+/limits/?", path) and request.method == "GET":
        return json_response({"DailyApiRequests": {"Max": 15000, "Remaining": 14999}})
    m = re.fullmatch(r"services/data/v\d+\.\d+/sobjects/(\w+)(?:/(\w+))?", path)
    if not m:
        return error("salesforce", 404, "The requested resource does not exist", "NOT_FOUND")
    sotype, sid = m.group(1), m.group(2)
    data, err = _body(request) if request.method in ("POST", "PATCH") else ({}, None)
    if err or not isinstance(data, dict):
        return error("salesforce", 400, err or "Body must be an object", "JSON_PARSER_ERROR")
    if request.method == "POST" and sid is None:
        obj = SandboxObject.objects.create(system="salesforce", object_type=sotype, data={"fields": data})
        obj.external_key = data.get("Id") or f"006SBX{obj.pk:09d}"
        obj.save(update_fields=["external_key"])
        return json_response({"id": obj.external_key, "success": True, "errors": []}, 201)
    obj = SandboxObject.objects.filter(system="salesforce", object_type=sotype, external_key=sid).first()
    if obj is None:
        return error("salesforce", 404, "The requested resource does not exist", "NOT_FOUND")
    if request.method == "GET":
        return json_response({"attributes": {"type": sotype}, "Id": sid, **obj.data.get("fields", {})})
    if request.method == "PATCH":
        with transaction.atomic():
            obj = SandboxObject.objects.select_for_update().get(pk=obj.pk)
            obj.data.setdefault("fields", {}).update(data)
            obj.writes += 1
            obj.save()
        from django.http import HttpResponse

        return HttpResponse(status=204)
    return error("salesforce", 405, "Method not allowed", "METHOD_NOT_ALLOWED")


# ------------------------------------------------------------------ NetSuite REST record service

TAX_ID_FORMATS = {
    "US": r"\d{2}-\d{7}", "GB": r"GB\d{9}", "DE": r"DE\d{9}", "FR": r"FR[0-9A-Z]{2}\d{9}",
    "NL": r"NL\d{9}B\d{2}", "CA": r"\d{9}(RT\d{4})?",
}


def _netsuite_validate(record_type: str, data: dict) -> tuple[str, str] | None:
    if record_type in NETSUITE_VALIDATORS:
        return NETSUITE_VALIDATORS[record_type](data)
    if not (data.get("companyName") or "").strip():
        return ("Please enter value(s) for: Company Name", "companyName")
    if not (data.get("subsidiary") or {}).get("id"):
        return ("Please enter value(s) for: Subsidiary", "subsidiary")
    if record_type == "customer":
        country = ""
        items = ((data.get("addressBook") or {}).get("items")) or []
        if items:
            country = (((items[0].get("addressBookAddress") or {}).get("country")) or {}).get("id", "")
        tax = (data.get("vatRegNumber") or "").strip()
        pattern = TAX_ID_FORMATS.get(country)
        if pattern and not re.fullmatch(pattern, tax):
            return (f"Invalid vatRegNumber: {tax!r} is not a valid tax registration number for country {country}.",
                    "vatRegNumber")
    if record_type == "job" and not (data.get("parent") or {}).get("id"):
        return ("Please enter value(s) for: Customer", "parent")
    return None


# other record types the sandbox upserts by external id, with their validation: record type → validate(data)
# returning (message, field) for a 400, or None. Registered by the modules listed in EXTENSIONS (bottom).
NETSUITE_VALIDATORS: dict = {}
# extra routes: (compiled regex on the path, handler(request, match) -> HttpResponse), checked first
NETSUITE_ROUTES: list = []
KANTATA_ROUTES: list = []


def _record_types() -> str:
    return "|".join(["customer", "job", *NETSUITE_VALIDATORS])


@sandbox_view
def netsuite(request, path: str):
    if (denied := check(request, "netsuite")) is not None:
        return denied
    for pattern, handler in NETSUITE_ROUTES:
        if (match := pattern.fullmatch(path)) is not None:
            return handler(request, match)
    types = _record_types()
    listing = re.fullmatch(rf"services/rest/record/v1/({types})/?", path)
    if listing and request.method == "GET":
        objs = list(SandboxObject.objects.filter(system="netsuite", object_type=listing.group(1)).order_by("pk")
                    [:min(int(request.GET.get("limit", 1000) or 1000), 1000)])
        return json_response({"links": [], "count": len(objs), "hasMore": False, "offset": 0, "totalResults": len(objs),
                              "items": [{"id": str(o.pk), "links": []} for o in objs]})
    m = re.fullmatch(rf"services/rest/record/v1/({types})/(eid:[\w.\-:]+|\d+)", path)
    if not m:
        return error("netsuite", 404, f"Record type or path /{path} is not supported", "NONEXISTENT_ID")
    rtype, ref = m.group(1), m.group(2)
    base = request.build_absolute_uri(f"/sandbox/netsuite/services/rest/record/v1/{rtype}/")
    if ref.startswith("eid:"):
        lookup = {"external_key": ref[4:]}
    else:
        lookup = {"pk": int(ref)}
    if request.method == "GET":
        obj = SandboxObject.objects.filter(system="netsuite", object_type=rtype, **lookup).first()
        if obj is None:
            return error("netsuite", 404, f"Record {ref} was not found.", "NONEXISTENT_ID")
        return json_response({"id": str(obj.pk), "externalId": obj.external_key, **obj.data})
    if request.method in ("PUT", "PATCH"):
        data, err = _body(request)
        if err or not isinstance(data, dict):
            return error("netsuite", 400, err or "Body must be an object", "INVALID_CONTENT")
        if request.method == "PUT" and not ref.startswith("eid:"):
            return error("netsuite", 400, "Upsert needs an external id: use eid:<externalId>", "INVALID_ID")
        problem = _netsuite_validate(rtype, data)
        if problem:
            return error("netsuite", 400, problem[0], "INVALID_VALUE" if problem[1] == "vatRegNumber"
                         else "USER_ERROR", problem[1])
        try:
            with transaction.atomic():
                obj, created = SandboxObject.objects.select_for_update().get_or_create(
                    system="netsuite", object_type=rtype, external_key=lookup.get("external_key"),
                    defaults={"data": data})
                if not created:
                    obj.data = {**obj.data, **data}
                    obj.writes = F("writes") + 1
                    obj.save()
        except IntegrityError:  # a concurrent upsert created it first: update that one
            obj = SandboxObject.objects.get(system="netsuite", object_type=rtype, **lookup)
        resp = json_response({}, 204)
        resp.content = b""
        resp["Location"] = f"{base}{obj.pk}"
        return resp
    return error("netsuite", 405, "Method not allowed", "INVALID_REQUEST")


# ------------------------------------------------------------------ Kantata OX API v1


def _kantata_list(objs) -> dict:
    return {"count": len(objs), "results": [{"key": "workspaces", "id": str(o.pk)} for o in objs],
            "workspaces": {str(o.pk): {"id": str(o.pk), **o.data} for o in objs},
            "meta": {"count": len(objs), "page_count": 1, "page_number": 1, "page_size": 20}}


@sandbox_view
def kantata(request, path: str):
    if (denied := check(request, "kantata")) is not None:
        return denied
    for pattern, handler in KANTATA_ROUTES:
        if (match := pattern.fullmatch(path)) is not None:
            return handler(request, match)
    if path != "api/v1/workspaces.json":
        return error("kantata", 404, f"No route matches /{path}", "not_found")
    if request.method == "GET":
        qs = SandboxObject.objects.filter(system="kantata", object_type="workspace").order_by("pk")
        if request.GET.get("search"):
            qs = qs.filter(data__title__icontains=request.GET["search"])
        per_page = min(int(request.GET.get("per_page", 20) or 20), 200)
        return json_response(_kantata_list(list(qs[:per_page])))
    if request.method == "POST":
        data, err = _body(request)
        ws = (data or {}).get("workspace") if isinstance(data, dict) else None
        if err or not isinstance(ws, dict):
            return error("kantata", 400, err or "workspace is required", "parameter")
        if not (ws.get("title") or "").strip():
            return error("kantata", 422, "Title can't be blank", "validation", "title")
        if ws.get("creator_role") not in ("maven", "buyer"):
            return error("kantata", 422, "Creator role must be maven or buyer", "validation", "creator_role")
        obj = SandboxObject.objects.create(system="kantata", object_type="workspace", data=ws)
        return json_response(_kantata_list([obj]))
    return error("kantata", 405, "Method not allowed", "method")


# modules that add record types / routes to the sandboxes above (each registers itself on import)
EXTENSIONS = [
    "apps.sandbox.psa_time",  # Kantata time entries and expenses; NetSuite time bills and charges
    "apps.sandbox.billing",  # NetSuite invoices and payments; Kantata milestones
    "apps.sandbox.changes",  # Kantata workspace budget updates; NetSuite billing schedules
]


def _load_extensions() -> None:
    import importlib

    for module in EXTENSIONS:
        importlib.import_module(module)


_load_extensions()


def lazy_view(dotted: str):
    """A view imported on first request (the Stripe and Anaplan sandboxes live in their own modules)."""
    module, _, name = dotted.partition(":")

    def view(request, *args, **kwargs):
        import importlib

        return getattr(importlib.import_module(module), name)(request, *args, **kwargs)

    return csrf_exempt(login_not_required(view))
