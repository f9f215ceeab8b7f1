"""What every NetSuite record route shares (views.py, invoices.py): the record service's path, a record as GET
returns it, the list response, and finding a record by internal id or `eid:<externalId>`."""

from __future__ import annotations

from django.http import HttpResponse

from ..faults import error, json_response
from ..models import SandboxObject

RECORD = "services/rest/record/v1"


def record_json(obj: SandboxObject) -> dict:
    return {"id": str(obj.pk), "externalId": obj.external_key, **obj.data}


def lookup(ref: str) -> dict:
    """The SandboxObject filter for a reference: `eid:<externalId>` or an internal id."""
    return {"external_key": ref[4:]} if ref.startswith("eid:") else {"pk": int(ref)}


def find(rtype: str, ref: str) -> SandboxObject | None:
    return SandboxObject.objects.filter(system="netsuite", object_type=rtype, **lookup(ref)).first()


def not_found(ref: str) -> HttpResponse:
    return error("netsuite", 404, f"Record {ref} was not found.", "NONEXISTENT_ID")


def listing(request, rtype: str) -> HttpResponse:
    """GET …/<type>: the ids of the records of a type (one page, `limit` at most 1000)."""
    objs = list(SandboxObject.objects.filter(system="netsuite", object_type=rtype).order_by("pk")
                [:min(int(request.GET.get("limit", 1000) or 1000), 1000)])
    return json_response({"links": [], "count": len(objs), "hasMore": False, "offset": 0, "totalResults": len(objs),
                          "items": [{"id": str(o.pk), "links": []} for o in objs]})
