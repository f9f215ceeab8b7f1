"""Salesforce REST API: read the records a notification names (GET sobjects/<type>/<id>?fields=…), and write the
handoff's results back onto the Opportunity and its Account (PATCH sobjects/<type>/<id>)."""

from __future__ import annotations

from apps.connectors.base import BaseClient, exact_json, path, safe_json

from .mapping import ACCOUNT_FIELDS, AMENDMENT_FIELDS, OPPORTUNITY_FIELDS

API_VERSION = "v62.0"


def _sobject(sobject_type: str, record_id: str) -> str:
    return path("/services/data", API_VERSION, "sobjects", sobject_type, record_id)


class SalesforceClient(BaseClient):
    system = "salesforce"

    def error_detail(self, response):
        body = safe_json(response)
        if isinstance(body, list) and body and isinstance(body[0], dict):
            e = body[0]
            fields = e.get("fields") or []
            return (e.get("message", ""), fields[0] if fields else "", e.get("errorCode", ""))
        return (response.text[:300], "", "")

    def probe(self) -> None:
        self.request("GET", path("/services/data", API_VERSION, "limits"), summary="probe")

    def get_record(self, sobject_type: str, record_id: str, fields: list[str]) -> dict:
        """One record's fields as the API returns them (numbers as Decimal); a 404 is a permanent DownstreamError."""
        r = self.request("GET", _sobject(sobject_type, record_id), params={"fields": ",".join(fields)},
                         summary=f"fetch {sobject_type} {record_id}")
        return exact_json(r.text)

    def get_opportunity(self, opp_id: str) -> dict:
        return self.get_record("Opportunity", opp_id, OPPORTUNITY_FIELDS)

    def get_account(self, account_id: str) -> dict:
        return self.get_record("Account", account_id, ACCOUNT_FIELDS)

    def get_amendment(self, amendment_id: str) -> dict:
        return self.get_record("Contract_Amendment__c", amendment_id, AMENDMENT_FIELDS)

    def update_opportunity(self, opp_id: str, fields: dict) -> None:
        self.request("PATCH", _sobject("Opportunity", opp_id), json_body=fields)

    def update_account(self, account_id: str, fields: dict) -> None:
        self.request("PATCH", _sobject("Account", account_id), json_body=fields)
