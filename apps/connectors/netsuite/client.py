"""NetSuite REST record service (SuiteTalk REST): customer and job (project) upserts by external id.

`PUT /services/rest/record/v1/customer/eid:<externalId>` creates the record or updates the one with that
external id, so a retried or resubmitted record never creates a second customer. NetSuite answers 204 with the
record's URL in the Location header, and reports errors as RFC 9457 problem details with `o:errorDetails`.
"""

from __future__ import annotations

from apps.connectors.base import BaseClient, DownstreamError, path, safe_json, segment

RECORD = "/services/rest/record/v1"


def _eid_path(record_type: str, external_id: str) -> str:
    """The record with this external id: `…/<type>/eid:<externalId>` (the id encoded, the `eid:` prefix not)."""
    return f"{path(RECORD, record_type)}/eid:{segment(external_id)}"


def record_path(record_type: str, internal_id: str) -> str:
    return path(RECORD, record_type, internal_id)


class NetSuiteClient(BaseClient):
    system = "netsuite"

    def error_detail(self, response):
        body = safe_json(response) or {}
        details = body.get("o:errorDetails") if isinstance(body, dict) else None
        if details and isinstance(details, list) and isinstance(details[0], dict):
            d = details[0]
            return (d.get("detail", ""), d.get("o:errorPath", ""), d.get("o:errorCode", ""))
        if isinstance(body, dict) and body.get("title"):
            return (body["title"], "", "")
        return (response.text[:300], "", "")

    def upsert(self, record_type: str, external_id: str, fields: dict) -> str:
        """Create or update the record of this type with this external id; returns its internal id."""
        return self._upsert(record_type, external_id, fields, f"upsert {record_type} eid:{external_id}")

    def get_by_external_id(self, record_type: str, external_id: str) -> dict | None:
        r = self.request("GET", _eid_path(record_type, external_id), not_found_ok=True,
                         summary=f"get {record_type} eid:{external_id}")
        return None if r.status_code == 404 else r.json()

    def _upsert(self, record_type: str, external_id: str, fields: dict, summary: str) -> str:
        r = self.request("PUT", _eid_path(record_type, external_id), json_body=fields, summary=summary)
        location = r.headers.get("Location", "")
        internal_id = location.rstrip("/").rsplit("/", 1)[-1] if location else ""
        if not internal_id.isdigit():
            raise DownstreamError(f"NetSuite answered {r.status_code} without the record's Location",
                                  permanent=False, system=self.system, status=r.status_code)
        return internal_id

    def upsert_customer(self, external_id: str, fields: dict) -> str:
        return self._upsert("customer", external_id, fields, f"upsert customer eid:{external_id}")

    def upsert_job(self, external_id: str, fields: dict) -> str:
        return self._upsert("job", external_id, fields, f"upsert job eid:{external_id}")

    def probe(self) -> None:
        self.request("GET", f"{RECORD}/customer", params={"limit": 1}, summary="probe")

    def get_customer(self, internal_id: str) -> dict:
        return self.request("GET", record_path("customer", internal_id)).json()
