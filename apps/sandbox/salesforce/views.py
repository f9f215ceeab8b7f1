"""The Salesforce sandbox: the REST API's sObjects (create, read, update by id) and limits, with Salesforce's
paths, auth and error shape."""

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
    m = re.fullmatch(r"services/data/v\d+\.\d+/sobjects/(\w+)(?:/(\w+))?", path)
    if not m:
        return error("salesforce", 404, "The requested resource does not exist", "NOT_FOUND")
    sotype, sid = m.group(1), m.group(2)
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
        return json_response({"attributes": {"type": sotype}, "Id": sid, **obj.data.get("fields", {})})
    if request.method == "PATCH":
        with transaction.atomic():
            obj = SandboxObject.objects.select_for_update().get(pk=obj.pk)
            obj.data.setdefault("fields", {}).update(data)
            obj.writes += 1
            obj.save()
        return HttpResponse(status=204)
    return error("salesforce", 405, "Method not allowed", "METHOD_NOT_ALLOWED")
