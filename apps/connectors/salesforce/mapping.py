"""Salesforce's sObject fields ⇄ the canonical opportunity and amendment.

The Account's fields come as formula fields on the Opportunity (Account_Name__c, Account_Tax_Id__c,
Account_Country__c), which is how orgs usually expose them in an Outbound Message.
"""

from __future__ import annotations

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
