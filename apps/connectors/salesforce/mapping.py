"""Salesforce's records ⇄ the canonical opportunity and amendment.

The canonical payloads are built only from what the REST API returns for the records (GET
/services/data/vXX.X/sobjects/<type>/<id>?fields=…): an Outbound Message is a trigger, and its field values are
never used (it is not signed). The Account is read as its own record (Name, Tax_Id__c, BillingCountryCode,
ParentId). The REST API answers a currency field as a JSON number, read as Decimal (never float).
"""

from __future__ import annotations

from decimal import Decimal

from apps.canonical import normalise

# the namespaces of an sObject inside an Outbound Message
SF_NS = "urn:sobject.enterprise.soap.sforce.com"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"

OPPORTUNITY_FIELDS = ["Id", "Name", "StageName", "IsWon", "Amount", "CurrencyIsoCode", "CloseDate", "AccountId",
                      "Contract_Type__c", "Start_Date__c", "End_Date__c", "Service_Line__c", "Project_Template__c",
                      "Billing_Schedule__c", "Billing_Terms__c", "Legal_Entity__c", "SystemModstamp"]
ACCOUNT_FIELDS = ["Id", "Name", "Tax_Id__c", "BillingCountryCode", "ParentId"]
AMENDMENT_FIELDS = ["Id", "Opportunity__c", "Status__c", "New_Contract_Value__c", "New_Start_Date__c",
                    "New_End_Date__c", "Rate_Card__c", "Billing_Schedule__c", "SystemModstamp"]


def field_text(el, name):
    """The text of an sObject field in an Outbound Message ("" when absent or xsi:nil)."""
    child = el.find(f"{{{SF_NS}}}{name}")
    if child is None or child.get(f"{{{XSI_NS}}}nil") == "true":
        return ""
    return (child.text or "").strip()


def value(record: dict, name: str) -> str:
    """A field of a REST record as text ("" when null or absent; a JSON number as its exact decimal text)."""
    v = (record or {}).get(name)
    if v is None or isinstance(v, (dict, list)):
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v).strip()


def is_won(opportunity: dict, won_stages) -> bool:
    return value(opportunity, "IsWon") == "true" or value(opportunity, "StageName") in set(won_stages)


def canonical_from_amendment(record: dict) -> dict:
    modified = value(record, "SystemModstamp")
    return {
        "amendment_id": value(record, "Id"),
        "opportunity_id": value(record, "Opportunity__c"),
        "amended_amount": value(record, "New_Contract_Value__c"),
        "amended_start_date": value(record, "New_Start_Date__c")[:10],
        "amended_end_date": value(record, "New_End_Date__c")[:10],
        "amended_rate_card": value(record, "Rate_Card__c"),
        "amended_billing_schedule": value(record, "Billing_Schedule__c"),
        # orders versions of the same amendment, and amendments of one engagement (the newest applied wins)
        "approved_at": modified,
        "source_modified_at": modified,
    }


def canonical_from_opportunity(opportunity: dict, account: dict | None) -> dict:
    o, a = opportunity, account or {}
    return {
        "opportunity_id": value(o, "Id"),
        # orders versions of the same opportunity: an older one never overwrites a newer one
        "source_modified_at": value(o, "SystemModstamp"),
        "opportunity_name": value(o, "Name"),
        "amount": value(o, "Amount"),
        "currency": value(o, "CurrencyIsoCode").upper(),
        "close_date": value(o, "CloseDate")[:10],
        "contract_type": value(o, "Contract_Type__c"),
        "start_date": value(o, "Start_Date__c")[:10],
        "end_date": value(o, "End_Date__c")[:10],
        "service_line": value(o, "Service_Line__c"),
        "project_template": value(o, "Project_Template__c"),
        "billing_schedule": value(o, "Billing_Schedule__c"),
        "billing_terms": value(o, "Billing_Terms__c"),
        "legal_entity": value(o, "Legal_Entity__c"),
        "account": {
            "id": value(a, "Id") or value(o, "AccountId"),
            "name": value(a, "Name"),
            "tax_id": value(a, "Tax_Id__c"),
            "country": normalise.country_or_as_given(value(a, "BillingCountryCode")),  # a formula may give a name
            "parent_id": value(a, "ParentId"),
        },
    }


# ------------------------------------------------------------ write-back: what the Opportunity and Account show of
# Handoff's work. The same four functions, under the same names, are in apps/connectors/hubspot/mapping.py.


def opportunity_project_ids(context: dict) -> dict:
    """The Opportunity's fields once the handoff has created the customer, the project and the engagement."""
    return {"ERP_Customer_Id__c": context["erp_customer_id"], "PSA_Project_Id__c": context["psa_project_id"],
            "ERP_Project_Id__c": context["erp_project_id"], "Engagement_Code__c": context["engagement_code"],
            "Handoff_Status__c": "project created"}


def opportunity_status(status: str) -> dict:
    return {"Handoff_Status__c": status}


def opportunity_invoice(invoice, standing, currency: str) -> dict:
    """The Opportunity's fields for its engagement's latest invoice and what is open
    (apps/finance/invoicing.Standing)."""
    return {"Invoice_Number__c": invoice.number, "Invoice_Status__c": invoice.status,
            "Open_Amount__c": str(standing.open_amounts.get(currency, Decimal("0.00"))),
            "Days_Overdue__c": standing.max_days_overdue, "Payment_Status__c": standing.payment_status}


def account_standing(standing, currency: str) -> dict:
    """The Account's fields for what its invoices leave open."""
    return {"Open_Invoice_Amount__c": str(standing.open_amounts.get(currency, Decimal("0.00"))),
            "Open_Invoice_Amounts__c": standing.open_amount_text(currency),
            "Days_Overdue__c": standing.max_days_overdue, "Payment_Status__c": standing.payment_status,
            "Open_Invoices__c": standing.open_invoices}
