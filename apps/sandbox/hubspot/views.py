"""The HubSpot sandbox: CRM v3 objects (deals and companies) with their associations, HubSpot's paths, property
shapes, auth and error shape."""

from __future__ import annotations

import re

from django.db import transaction

from ..faults import check, error, json_response
from ..http import iso, read_json, sandbox_view
from ..models import SandboxObject


def _hs_object(obj: SandboxObject, properties: list[str] | None, associations: list[str]) -> dict:
    props = obj.data.get("properties", {})
    if properties:
        props = {k: props.get(k) for k in properties}
    out = {"id": str(obj.pk), "properties": {**props, "hs_object_id": str(obj.pk)}, "createdAt": iso(obj.created_at),
           "updatedAt": iso(obj.updated_at), "archived": False}
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
        data, err = read_json(request)
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
        data, err = read_json(request)
        if err or not isinstance(data, dict) or not isinstance(data.get("properties"), dict):
            return error("hubspot", 400, err or "Invalid input JSON: properties is required")
        with transaction.atomic():
            obj = SandboxObject.objects.select_for_update().get(pk=obj.pk)
            obj.data.setdefault("properties", {}).update({k: str(v) for k, v in data["properties"].items()})
            obj.writes += 1
            obj.save()
        return json_response(_hs_object(obj, None, []))
    return error("hubspot", 405, "Method not allowed")
