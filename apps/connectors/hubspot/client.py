"""HubSpot CRM v3 objects API: read a deal and its company, write the handoff's results back onto them."""

from __future__ import annotations

from apps.connectors.base import BaseClient, path, safe_json

from .mapping import AMENDMENT_PROPERTIES, COMPANY_PROPERTIES, DEAL_PROPERTIES


class HubSpotClient(BaseClient):
    system = "hubspot"

    def error_detail(self, response):
        body = safe_json(response) or {}
        if isinstance(body, dict):
            return (body.get("message") or response.text[:300], "", body.get("category", ""))
        return (response.text[:300], "", "")

    def get_deal(self, deal_id: str) -> dict:
        r = self.request("GET", path("/crm/v3/objects/deals", deal_id),
                         params={"properties": ",".join(DEAL_PROPERTIES), "associations": "companies"},
                         summary=f"fetch deal {deal_id}")
        return r.json()

    def get_deal_amendment(self, deal_id: str) -> dict:
        """The deal's amendment properties (a change order's source)."""
        r = self.request("GET", path("/crm/v3/objects/deals", deal_id),
                         params={"properties": ",".join(AMENDMENT_PROPERTIES)},
                         summary=f"fetch amendment of deal {deal_id}")
        return r.json()

    def get_company(self, company_id: str) -> dict:
        r = self.request("GET", path("/crm/v3/objects/companies", company_id),
                         params={"properties": ",".join(COMPANY_PROPERTIES)}, summary=f"fetch company {company_id}")
        return r.json()

    def probe(self) -> None:
        """A cheap authenticated read, used to close an open circuit."""
        self.request("GET", "/crm/v3/objects/deals", params={"limit": 1}, summary="probe")

    def update_deal(self, deal_id: str, properties: dict) -> dict:
        r = self.request("PATCH", path("/crm/v3/objects/deals", deal_id), json_body={"properties": properties})
        return r.json()

    def update_company(self, company_id: str, properties: dict) -> dict:
        r = self.request("PATCH", path("/crm/v3/objects/companies", company_id), json_body={"properties": properties})
        return r.json()
