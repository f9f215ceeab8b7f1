"""HubSpot's deal and company fields ⇄ the canonical opportunity."""

from __future__ import annotations

from decimal import Decimal

from apps.canonical import normalise

# what the client reads of a deal and its company: the fields canonical_from_deal maps, and the ids written back
DEAL_PROPERTIES = [
    "dealname", "amount", "deal_currency_code", "closedate", "dealstage", "pipeline",
    "legal_entity", "billing_terms", "service_line", "project_template", "contract_type",
    "start_date", "end_date", "billing_schedule",
    "handoff_erp_customer_id", "handoff_psa_project_id", "handoff_erp_project_id",
]
COMPANY_PROPERTIES = ["name", "domain", "country", "tax_id", "hs_parent_company_id"]
AMENDMENT_PROPERTIES = ["amendment_status", "amendment_id", "amended_amount", "amended_start_date",
                        "amended_end_date", "amended_rate_card", "amended_billing_schedule"]


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
            "country": normalise.country_or_as_given(c.get("country") or ""),
            "parent_id": c.get("hs_parent_company_id") or "",
        },
    }


def canonical_from_deal_amendment(deal: dict, deal_id: str) -> dict:
    """The deal's current amendment (its amendment_* properties) as the canonical change order."""
    p = deal.get("properties") or {}
    return {"deal_id": str(deal_id), "opportunity_id": str(deal.get("id") or deal_id),
            "amendment_id": str(p.get("amendment_id") or ""),
            "amended_amount": p.get("amended_amount") or "",
            "amended_start_date": (p.get("amended_start_date") or "")[:10],
            "amended_end_date": (p.get("amended_end_date") or "")[:10],
            "amended_rate_card": p.get("amended_rate_card") or "",
            "amended_billing_schedule": p.get("amended_billing_schedule") or ""}


def deal_company_id(deal: dict) -> str | None:
    results = (((deal.get("associations") or {}).get("companies") or {}).get("results")) or []
    return str(results[0]["id"]) if results else None


# ------------------------------------------------------------ write-back: what the deal and company show of Handoff's
# work. The same four functions, under the same names, are in apps/connectors/salesforce/mapping.py.


def opportunity_project_ids(context: dict) -> dict:
    """The deal's properties once the handoff has created the customer, the project and the engagement."""
    return {"handoff_erp_customer_id": context["erp_customer_id"], "handoff_psa_project_id": context["psa_project_id"],
            "handoff_erp_project_id": context["erp_project_id"], "handoff_engagement_code": context["engagement_code"],
            "handoff_status": "project created"}


def opportunity_status(status: str) -> dict:
    return {"handoff_status": status}


def opportunity_invoice(invoice, standing, currency: str) -> dict:
    """The deal's properties for its engagement's latest invoice and what is open (apps/finance/invoicing.Standing)."""
    return {"handoff_invoice_number": invoice.number, "handoff_invoice_status": invoice.status,
            "handoff_open_amount": str(standing.open_amounts.get(currency, Decimal("0.00"))),
            "handoff_open_amount_currency": currency, "handoff_days_overdue": str(standing.max_days_overdue),
            "handoff_payment_status": standing.payment_status}


def account_standing(standing, currency: str) -> dict:
    """The company's properties for what its invoices leave open."""
    return {"handoff_open_amount": standing.open_amount_text(currency),
            "handoff_days_overdue": str(standing.max_days_overdue),
            "handoff_payment_status": standing.payment_status, "handoff_open_invoices": str(standing.open_invoices)}
