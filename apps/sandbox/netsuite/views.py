"""The NetSuite sandbox: the REST record service (`services/rest/record/v1/<type>`), with NetSuite's paths, auth
and error shape. Records are upserted by external id (`PUT …/<type>/eid:<externalId>`, 204 + Location) and read
back by internal or external id; each record type is validated as NetSuite would (VALIDATORS). Invoices and
customer payments have their own handler (invoices.py): the sandbox is the ERP that totals and settles them.
"""

from __future__ import annotations

import re

from django.db import IntegrityError, transaction
from django.db.models import F

from ..faults import check, error, json_response
from ..http import read_json, sandbox_view
from ..models import SandboxObject
from . import invoices
from .records import RECORD, find, listing, lookup, not_found, record_json
from .schedules import validate_billing_schedule
from .time_bills import validate_charge, validate_timebill

TAX_ID_FORMATS = {
    "US": r"\d{2}-\d{7}", "GB": r"GB\d{9}", "DE": r"DE\d{9}", "FR": r"FR[0-9A-Z]{2}\d{9}",
    "NL": r"NL\d{9}B\d{2}", "CA": r"\d{9}(RT\d{4})?",
}

# record type → validate(data): (message, field) for a 400, or None; customer and job: _validate_party
VALIDATORS = {
    "timebill": validate_timebill,
    "charge": validate_charge,
    "invoice": invoices.validate_invoice,
    "customerPayment": invoices.validate_payment,
    "billingSchedule": validate_billing_schedule,
}
RECORD_TYPES = "|".join(["customer", "job", *VALIDATORS])
# paths with their own handler, checked before the generic record routes
ROUTES = [(re.compile(rf"{RECORD}/(invoice|customerPayment)(?:/(eid:[\w.\-:]+|\d+))?/?"), invoices.record)]


def _validate_party(record_type: str, data: dict) -> tuple[str, str] | None:
    """A customer or a project (job): a company name, a subsidiary, a tax id in its country's format."""
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


@sandbox_view
def netsuite(request, path: str):
    if (denied := check(request, "netsuite")) is not None:
        return denied
    for pattern, handler in ROUTES:
        if (match := pattern.fullmatch(path)) is not None:
            return handler(request, match)
    listed = re.fullmatch(rf"{RECORD}/({RECORD_TYPES})/?", path)
    if listed and request.method == "GET":
        return listing(request, listed.group(1))
    m = re.fullmatch(rf"{RECORD}/({RECORD_TYPES})/(eid:[\w.\-:]+|\d+)", path)
    if not m:
        return error("netsuite", 404, f"Record type or path /{path} is not supported", "NONEXISTENT_ID")
    rtype, ref = m.group(1), m.group(2)
    base = request.build_absolute_uri(f"/sandbox/netsuite/{RECORD}/{rtype}/")
    where = lookup(ref)
    if request.method == "GET":
        obj = find(rtype, ref)
        return json_response(record_json(obj)) if obj is not None else not_found(ref)
    if request.method in ("PUT", "PATCH"):
        data, err = read_json(request)
        if err or not isinstance(data, dict):
            return error("netsuite", 400, err or "Body must be an object", "INVALID_CONTENT")
        if request.method == "PUT" and not ref.startswith("eid:"):
            return error("netsuite", 400, "Upsert needs an external id: use eid:<externalId>", "INVALID_ID")
        validate = VALIDATORS.get(rtype)
        problem = validate(data) if validate else _validate_party(rtype, data)
        if problem:
            return error("netsuite", 400, problem[0], "INVALID_VALUE" if problem[1] == "vatRegNumber"
                         else "USER_ERROR", problem[1])
        try:
            with transaction.atomic():
                obj, created = SandboxObject.objects.select_for_update().get_or_create(
                    system="netsuite", object_type=rtype, external_key=where.get("external_key"),
                    defaults={"data": data})
                if not created:
                    obj.data = {**obj.data, **data}
                    obj.writes = F("writes") + 1
                    obj.save()
        except IntegrityError:  # a concurrent upsert created it first: update that one
            obj = SandboxObject.objects.get(system="netsuite", object_type=rtype, **where)
        resp = json_response({}, 204)
        resp.content = b""
        resp["Location"] = f"{base}{obj.pk}"
        return resp
    return error("netsuite", 405, "Method not allowed", "INVALID_REQUEST")
