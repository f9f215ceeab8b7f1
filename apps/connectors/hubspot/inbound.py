"""HubSpot: webhooks v3 in (signed with X-HubSpot-Signature-v3), CRM v3 objects API out.

Webhook signature v3 (HubSpot docs, "Validating requests"): base64(HMAC-SHA256(client secret,
method + URI + body + timestamp)), where the timestamp is X-HubSpot-Request-Timestamp in milliseconds, and a
request older than 5 minutes is rejected. A webhook body is a JSON array of events; a deal-stage event carries
only ids (`objectId`), so the workflow fetches the deal and its company through the CRM v3 API.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from .base import BaseClient, safe_json
from .inbound import EventSpec, Rejected

DEAL_PROPERTIES = [
    "dealname", "amount", "deal_currency_code", "closedate", "dealstage", "pipeline",
    "legal_entity", "billing_terms", "service_line", "project_template", "contract_type",
    "start_date", "end_date", "billing_schedule",
    "handoff_erp_customer_id", "handoff_psa_project_id", "handoff_erp_project_id",
]
COMPANY_PROPERTIES = ["name", "domain", "country", "tax_id", "hs_parent_company_id"]


def signature_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    # HubSpot decodes these URL-encoded characters in the URI before signing
    for enc, dec in (("%3A", ":"), ("%2F", "/"), ("%3F", "?"), ("%40", "@"), ("%21", "!"), ("%24", "$"),
                     ("%27", "'"), ("%28", "("), ("%29", ")"), ("%2A", "*"), ("%2C", ","), ("%3B", ";")):
        uri = uri.replace(enc, dec)
    message = method.encode() + uri.encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def verify(connection, *, method: str, uris: list[str], body: bytes, headers, max_age: int) -> None:
    """Raise Rejected(401) unless the request carries a valid, fresh v3 signature."""
    sig = headers.get("X-HubSpot-Signature-v3", "")
    ts = headers.get("X-HubSpot-Request-Timestamp", "")
    if not sig or not ts:
        raise Rejected(401, "missing X-HubSpot-Signature-v3 or X-HubSpot-Request-Timestamp header")
    try:
        age = abs(time.time() * 1000 - int(ts)) / 1000
    except ValueError:
        raise Rejected(401, "X-HubSpot-Request-Timestamp is not a number of milliseconds")
    if age > max_age:
        raise Rejected(401, f"stale timestamp: the request was signed {int(age)} s ago (limit {max_age} s)")
    if not connection.inbound_secret:
        raise Rejected(401, "this connection has no client secret configured to verify signatures")
    # compare bytes: compare_digest refuses str with non-ASCII characters (a forged header must be a 401, not a 500)
    sig_bytes = sig.encode("utf-8", "replace")
    for uri in uris:
        if hmac.compare_digest(signature_v3(connection.inbound_secret, method, uri,
                                            body, ts).encode(), sig_bytes):
            return
    raise Rejected(401, "bad signature: X-HubSpot-Signature-v3 does not match the body")


def _iso_ms(value) -> str:
    """HubSpot's occurredAt (epoch ms) as a sortable UTC timestamp; "" when absent or invalid."""
    from datetime import datetime, timezone

    try:
        return datetime.fromtimestamp(int(value) / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


def parse_events(connection, data) -> list[EventSpec]:
    """One EventSpec per webhook event; a closed-won deal stage starts quote-to-project, an approved amendment
    (amendment_status) a change order; anything else is ignored."""
    if not isinstance(data, list) or not data:
        raise Rejected(400, "a HubSpot webhook body must be a non-empty JSON array of events")
    if len(data) > 100:
        raise Rejected(400, "HubSpot sends at most 100 events per request")
    closed_won = set(connection.settings.get("closed_won_stages", ["closedwon"]))
    out = []
    for i, ev in enumerate(data):
        if not isinstance(ev, dict) or "eventId" not in ev or "subscriptionType" not in ev:
            raise Rejected(400, f"event {i} lacks eventId or subscriptionType")
        if not isinstance(ev.get("eventId"), (int, str)) or not str(ev["eventId"]).strip():
            raise Rejected(400, f"event {i}: eventId must be a number")
        stype = str(ev["subscriptionType"])[:60]
        etype = stype if stype != "deal.propertyChange" else f"{stype}:{ev.get('propertyName', '')}"
        spec = EventSpec(event_id=str(ev["eventId"])[:200], event_type=etype[:100], body=ev)
        if stype == "deal.propertyChange" and ev.get("propertyName") == "dealstage":
            if str(ev.get("propertyValue")) in closed_won:
                if not isinstance(ev.get("objectId"), (int, str)) or not str(ev["objectId"]).strip():
                    raise Rejected(400, f"event {i}: objectId is missing")
                spec.workflow = "quote_to_project"
                spec.source_key = f"deal:{ev['objectId']}"
                spec.payload = {"deal_id": str(ev["objectId"]), "portal_id": ev.get("portalId"),
                                "source_modified_at": _iso_ms(ev.get("occurredAt"))}
                spec.title = f"HubSpot deal {ev['objectId']}"
            else:
                spec.ignored = f"deal stage {ev.get('propertyValue')!r} is not closed-won"
        elif stype == "deal.propertyChange" and ev.get("propertyName") == "amendment_status":
            _amendment_event(connection, ev, i, spec)
        else:
            spec.ignored = f"no workflow acts on {etype}"
        out.append(spec)
    return out


def _amendment_event(connection, ev: dict, i: int, spec: EventSpec) -> None:
    """An approved amendment starts a change order. The deal holds one current amendment (its id comes with the
    fetch), so the record is per deal and runs again for each newer approval."""
    approved = {v.lower() for v in connection.settings.get("amendment_approved_values", ["approved"])}
    if str(ev.get("propertyValue") or "").lower() not in approved:
        spec.ignored = f"amendment status {ev.get('propertyValue')!r} is not approved"
        return
    if not isinstance(ev.get("objectId"), (int, str)) or not str(ev["objectId"]).strip():
        raise Rejected(400, f"event {i}: objectId is missing")
    occurred = _iso_ms(ev.get("occurredAt"))
    if not occurred:
        raise Rejected(400, f"event {i}: occurredAt must be the change's time in epoch milliseconds")
    spec.workflow = "change_order"
    spec.source_key = f"amendment:deal-{ev['objectId']}"
    spec.payload = {"deal_id": str(ev["objectId"]), "portal_id": ev.get("portalId"), "approved_at": occurred,
                    "source_modified_at": occurred}
    spec.title = f"Change order on HubSpot deal {ev['objectId']}"


class HubSpotClient(BaseClient):
    system = "hubspot"

    def error_detail(self, response):
        body = safe_json(response) or {}
        if isinstance(body, dict):
            return (body.get("message") or response.text[:300], "", body.get("category", ""))
        return (response.text[:300], "", "")

    def get_deal(self, deal_id: str) -> dict:
        r = self.request("GET", f"/crm/v3/objects/deals/{deal_id}",
                         params={"properties": ",".join(DEAL_PROPERTIES), "associations": "companies"},
                         summary=f"fetch deal {deal_id}")
        return r.json()

    def get_company(self, company_id: str) -> dict:
        r = self.request("GET", f"/crm/v3/objects/companies/{company_id}",
                         params={"properties": ",".join(COMPANY_PROPERTIES)}, summary=f"fetch company {company_id}")
        return r.json()

    def probe(self) -> None:
        """A cheap authenticated read, used to close an open circuit."""
        self.request("GET", "/crm/v3/objects/deals", params={"limit": 1}, summary="probe")

    def update_deal(self, deal_id: str, properties: dict) -> dict:
        r = self.request("PATCH", f"/crm/v3/objects/deals/{deal_id}", json_body={"properties": properties})
        return r.json()

    def update_company(self, company_id: str, properties: dict) -> dict:
        r = self.request("PATCH", f"/crm/v3/objects/companies/{company_id}", json_body={"properties": properties})
        return r.json()


def canonical_from_deal(deal: dict, company: dict | None) -> dict:
    """Map HubSpot's deal + company into the canonical opportunity payload."""
    p = deal.get("properties") or {}
    c = (company or {}).get("properties") or {}
    return {
        "opportunity_id": str(deal.get("id", "")),
        "opportunity_name": p.get("dealname") or "",
        "amount": p.get("amount") or "",
        "currency": (p.get("deal_currency_code") or "").upper(),
        "close_date": (p.get("closedate") or "")[:10],
        "contract_type": p.get("contract_type") or "",
        "start_date": (p.get("start_date") or "")[:10],
        "end_date": (p.get("end_date") or "")[:10],
        "service_line": p.get("service_line") or "",
        "project_template": p.get("project_template") or "",
        "billing_schedule": p.get("billing_schedule") or "",
        "billing_terms": p.get("billing_terms") or "",
        "legal_entity": p.get("legal_entity") or "",
        "account": {
            "id": str((company or {}).get("id", "")),
            "name": c.get("name") or "",
            "tax_id": c.get("tax_id") or "",
            "country": (c.get("country") or "").upper()[:2],
            "parent_id": c.get("hs_parent_company_id") or "",
        },
    }


def deal_company_id(deal: dict) -> str | None:
    results = (((deal.get("associations") or {}).get("companies") or {}).get("results")) or []
    return str(results[0]["id"]) if results else None
