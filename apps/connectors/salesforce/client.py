"""Salesforce REST API: the write-back onto the Opportunity and its Account (PATCH sobjects/<type>/<id>)."""

from __future__ import annotations

from apps.connectors.base import BaseClient, safe_json

API_VERSION = "v62.0"


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
        self.request("GET", f"/services/data/{API_VERSION}/limits", summary="probe")

    def update_opportunity(self, opp_id: str, fields: dict) -> None:
        self.request("PATCH", f"/services/data/{API_VERSION}/sobjects/Opportunity/{opp_id}", json_body=fields)

    def update_account(self, account_id: str, fields: dict) -> None:
        self.request("PATCH", f"/services/data/{API_VERSION}/sobjects/Account/{account_id}", json_body=fields)
