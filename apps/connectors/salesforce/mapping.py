"""Salesforce's sObject fields ⇄ the canonical opportunity and amendment.

The Account's fields come as formula fields on the Opportunity (Account_Name__c, Account_Tax_Id__c,
Account_Country__c), which is how orgs usually expose them in an Outbound Message.
"""

from __future__ import annotations

from decimal import Decimal

# the namespaces of an sObject inside an Outbound Message
SF_NS = "urn:sobject.enterprise.soap.sforce.com"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"


def field_text(el, name):
    """The text of an sObject field ("" when absent or xsi:nil)."""
    child = el.find(f"{{{SF_NS}}}{name}")
    if child is None or child.get(f"{{{XSI_NS}}}nil") == "true":
        return ""
    return (child.text or "").strip()


def canonical_from_amendment(so) -> dict:
    modified = field_text(so, "SystemModstamp") or field_text(so, "LastModifiedDate")
    return {
        "amendment_id": field_text(so, "Id"),
        "opportunity_id": field_text(so, "Opportunity__c"),
        "amended_amount": field_text(so, "New_Contract_Value__c"),
        "amended_start_date": field_text(so, "New_Start_Date__c")[:10],
        "amended_end_date": field_text(so, "New_End_Date__c")[:10],
        "amended_rate_card": field_text(so, "Rate_Card__c"),
        "amended_billing_schedule": field_text(so, "Billing_Schedule__c"),
        # orders versions of the same amendment, and amendments of one engagement (the newest applied wins)
        "approved_at": modified,
        "source_modified_at": modified,
    }


def canonical_from_sobject(so) -> dict:
    return {
        "opportunity_id": field_text(so, "Id"),
        # orders deliveries of the same opportunity: an older notification never overwrites a newer one
        "source_modified_at": field_text(so, "SystemModstamp") or field_text(so, "LastModifiedDate"),
        "opportunity_name": field_text(so, "Name"),
        "amount": field_text(so, "Amount"),
        "currency": field_text(so, "CurrencyIsoCode").upper(),
        "close_date": field_text(so, "CloseDate")[:10],
        "contract_type": field_text(so, "Contract_Type__c"),
        "start_date": field_text(so, "Start_Date__c")[:10],
        "end_date": field_text(so, "End_Date__c")[:10],
        "service_line": field_text(so, "Service_Line__c"),
        "project_template": field_text(so, "Project_Template__c"),
        "billing_schedule": field_text(so, "Billing_Schedule__c"),
        "billing_terms": field_text(so, "Billing_Terms__c"),
        "legal_entity": field_text(so, "Legal_Entity__c"),
        "account": {
            "id": field_text(so, "AccountId"),
            "name": field_text(so, "Account_Name__c"),
            "tax_id": field_text(so, "Account_Tax_Id__c"),
            "country": field_text(so, "Account_Country__c").upper()[:2],
            "parent_id": field_text(so, "Account_Parent_Id__c"),
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
