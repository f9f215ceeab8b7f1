"""HubSpot's deal and company fields ⇄ the canonical opportunity."""

from __future__ import annotations

# what the client reads of a deal and its company: the fields canonical_from_deal maps, and the ids written back
DEAL_PROPERTIES = [
    "dealname", "amount", "deal_currency_code", "closedate", "dealstage", "pipeline",
    "legal_entity", "billing_terms", "service_line", "project_template", "contract_type",
    "start_date", "end_date", "billing_schedule",
    "handoff_erp_customer_id", "handoff_psa_project_id", "handoff_erp_project_id",
]
COMPANY_PROPERTIES = ["name", "domain", "country", "tax_id", "hs_parent_company_id"]


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
