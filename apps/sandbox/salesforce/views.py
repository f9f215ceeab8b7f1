"""The Salesforce sandbox: the REST API's sObjects (create, read, update by id) and limits, with Salesforce's
paths, auth and error shape.

A read (`GET /services/data/vXX.X/sobjects/<type>/<id>[?fields=A,B]`) answers as Salesforce documents it: the
record's fields under their API names (only the ones asked for, null when the record has no value) with
`"attributes": {"type", "url"}`; an unknown id is a 404 `[{"errorCode": "NOT_FOUND", "message": …}]`."""

from __future__ import annotations

import re

from django.db import transaction
from django.http import HttpResponse

from ..faults import check, error, json_response
from ..http import read_json, sandbox_view
from ..models import SandboxObject


@sandbox_view
def salesforce(request, path: str):
    if (denied := check(request, "salesforce")) is not None:
        return denied
    if re.fullmatch(r"services/data/v\d+\.\d+/limits/?", path) and request.method == "GET":
        return json_response({"DailyApiRequests": {"Max": 15000, "Remaining": 14999}})
    m = re.fullmatch(r"services/data/(v\d+\.\d+)/sobjects/(\w+)(?:/(\w+))?", path)
    if not m:
        return error("salesforce", 404, "The requested resource does not exist", "NOT_FOUND")
    version, sotype, sid = m.groups()
    data, err = read_json(request) if request.method in ("POST", "PATCH") else ({}, None)
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
        return json_response(_record(obj, version, request.GET.get("fields", "")))
    if request.method == "PATCH":
        with transaction.atomic():
            obj = SandboxObject.objects.select_for_update().get(pk=obj.pk)
            obj.data.setdefault("fields", {}).update(data)
            obj.writes += 1
            obj.save()
        return HttpResponse(status=204)
    return error("salesforce", 405, "Method not allowed", "METHOD_NOT_ALLOWED")


def _record(obj: SandboxObject, version: str, fields: str) -> dict:
    stored = obj.data.get("fields", {})
    wanted = [f.strip() for f in fields.split(",") if f.strip()]
    values = {f: stored.get(f) for f in wanted} if wanted else stored
    url = f"/services/data/{version}/sobjects/{obj.object_type}/{obj.external_key}"
    return {"attributes": {"type": obj.object_type, "url": url}, **values, "Id": obj.external_key}
