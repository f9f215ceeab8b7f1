"""Salesforce: Outbound Messages in (SOAP, checked against the org id, answered with the documented Ack),
REST API out (PATCH /services/data/vXX.X/sobjects/Opportunity/<id> for the write-back).

An Outbound Message carries only the Opportunity's own fields; the Account's are sent as formula fields on the
Opportunity (Account_Name__c, Account_Tax_Id__c, Account_Country__c), which is how orgs usually expose them.
Salesforce does not sign Outbound Messages: the organization id must match the connection's, and a deployment
should also restrict the endpoint to Salesforce's IP ranges or use its client certificate.
"""

from __future__ import annotations

from defusedxml import ElementTree as DET
from defusedxml.common import DefusedXmlException

from .base import BaseClient, safe_json
from .inbound import EventSpec, Rejected

OM_NS = "http://soap.sforce.com/2005/09/outbound"
SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SF_NS = "urn:sobject.enterprise.soap.sforce.com"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
API_VERSION = "v62.0"

ACK = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    f'<soapenv:Envelope xmlns:soapenv="{SOAP_NS}"><soapenv:Body>'
    f'<notificationsResponse xmlns="{OM_NS}"><Ack>true</Ack></notificationsResponse>'
    "</soapenv:Body></soapenv:Envelope>"
)


def soap_fault(message: str) -> str:
    from xml.sax.saxutils import escape

    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_NS}"><soapenv:Body><soapenv:Fault>'
        f"<faultcode>soapenv:Client</faultcode><faultstring>{escape(message)}</faultstring>"
        "</soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    )


def _text(el, name):
    child = el.find(f"{{{SF_NS}}}{name}")
    if child is None or child.get(f"{{{XSI_NS}}}nil") == "true":
        return ""
    return (child.text or "").strip()


def parse_notifications(connection, body: bytes) -> list[EventSpec]:
    """Verify the org id and turn each <Notification> into an EventSpec."""
    try:
        root = DET.fromstring(body, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise Rejected(400, f"XML with a DTD or entities is refused ({exc.__class__.__name__})")
    except Exception as exc:  # ParseError and friends: malformed XML
        raise Rejected(400, f"malformed XML: {exc}")
    notifications = root.find(f".//{{{OM_NS}}}notifications")
    if notifications is None:
        raise Rejected(400, "not a Salesforce Outbound Message: no <notifications> element")
    org = (notifications.findtext(f"{{{OM_NS}}}OrganizationId") or "").strip()
    if not org:
        raise Rejected(401, "OrganizationId is missing")
    # Salesforce sends 18-character ids; compare on the case-sensitive 15-character prefix
    if not connection.organization_id or org[:15] != connection.organization_id[:15]:
        raise Rejected(401, "OrganizationId does not match this connection's Salesforce org")
    won_stages = set(connection.settings.get("closed_won_stages", ["Closed Won"]))
    out = []
    for n in notifications.findall(f"{{{OM_NS}}}Notification"):
        nid = (n.findtext(f"{{{OM_NS}}}Id") or "").strip()
        so = n.find(f"{{{OM_NS}}}sObject")
        if not nid or so is None:
            raise Rejected(400, "a <Notification> lacks its <Id> or <sObject>")
        sotype = (so.get(f"{{{XSI_NS}}}type") or "").split(":")[-1]
        spec = EventSpec(event_id=nid[:200], event_type=f"outbound_message:{sotype}"[:100],
                         body={"sObject": sotype, "Id": _text(so, "Id")})
        if sotype == "Contract_Amendment__c":
            _amendment_notification(so, spec)
        elif sotype != "Opportunity":
            spec.ignored = f"no workflow acts on {sotype} outbound messages"
        elif _text(so, "StageName") not in won_stages and _text(so, "IsWon").lower() != "true":
            spec.ignored = f"stage {_text(so, 'StageName')!r} is not closed-won"
        else:
            opp_id = _text(so, "Id")
            if not opp_id:
                raise Rejected(400, "the Opportunity has no Id")
            spec.workflow = "quote_to_project"
            spec.source_key = f"opportunity:{opp_id}"
            spec.payload = canonical_from_sobject(so)
            spec.title = spec.payload["opportunity_name"] or f"Salesforce opportunity {opp_id}"
        spec.body = {"sObject": sotype, "fields": {el.tag.split('}')[-1]: (el.text or "") for el in so}}
        out.append(spec)
    if not out:
        raise Rejected(400, "the Outbound Message holds no <Notification>")
    if len(out) > 100:
        raise Rejected(400, "Salesforce sends at most 100 notifications per message")
    return out


def _amendment_notification(so, spec: EventSpec) -> None:
    """An approved Contract_Amendment__c starts a change order, one record per amendment."""
    status = _text(so, "Status__c")
    if status.lower() != "approved":
        spec.ignored = f"amendment status {status!r} is not Approved"
        return
    amendment_id = _text(so, "Id")
    if not amendment_id:
        raise Rejected(400, "the Contract_Amendment__c has no Id")
    spec.workflow = "change_order"
    spec.source_key = f"amendment:{amendment_id}"
    spec.payload = canonical_from_amendment(so)
    spec.title = f"Change order {amendment_id}"


def canonical_from_amendment(so) -> dict:
    modified = _text(so, "SystemModstamp") or _text(so, "LastModifiedDate")
    return {
        "amendment_id": _text(so, "Id"),
        "opportunity_id": _text(so, "Opportunity__c"),
        "amended_amount": _text(so, "New_Contract_Value__c"),
        "amended_start_date": _text(so, "New_Start_Date__c")[:10],
        "amended_end_date": _text(so, "New_End_Date__c")[:10],
        "amended_rate_card": _text(so, "Rate_Card__c"),
        "amended_billing_schedule": _text(so, "Billing_Schedule__c"),
        # orders versions of the same amendment, and amendments of one engagement (the newest applied wins)
        "approved_at": modified,
        "source_modified_at": modified,
    }


def canonical_from_sobject(so) -> dict:
    return {
        "opportunity_id": _text(so, "Id"),
        # orders deliveries of the same opportunity: an older notification never overwrites a newer one
        "source_modified_at": _text(so, "SystemModstamp") or _text(so, "LastModifiedDate"),
        "opportunity_name": _text(so, "Name"),
        "amount": _text(so, "Amount"),
        "currency": _text(so, "CurrencyIsoCode").upper(),
        "close_date": _text(so, "CloseDate")[:10],
        "contract_type": _text(so, "Contract_Type__c"),
        "start_date": _text(so, "Start_Date__c")[:10],
        "end_date": _text(so, "End_Date__c")[:10],
        "service_line": _text(so, "Service_Line__c"),
        "project_template": _text(so, "Project_Template__c"),
        "billing_schedule": _text(so, "Billing_Schedule__c"),
        "billing_terms": _text(so, "Billing_Terms__c"),
        "legal_entity": _text(so, "Legal_Entity__c"),
        "account": {
            "id": _text(so, "AccountId"),
            "name": _text(so, "Account_Name__c"),
            "tax_id": _text(so, "Account_Tax_Id__c"),
            "country": _text(so, "Account_Country__c").upper()[:2],
            "parent_id": _text(so, "Account_Parent_Id__c"),
        },
    }


def build_outbound_message(*, org_id: str, notifications: list[tuple[str, dict]], action_id: str = "04k000000000001",
                           sobject_type: str = "Opportunity") -> bytes:
    """An Outbound Message as Salesforce sends it (used by the sandbox CRM and the tests)."""
    from xml.sax.saxutils import escape

    parts = []
    for nid, fields in notifications:
        fx = "".join(f"<sf:{k}>{escape(str(v))}</sf:{k}>" for k, v in fields.items())
        parts.append(f'<Notification><Id>{escape(nid)}</Id><sObject xsi:type="sf:{sobject_type}" '
                     f'xmlns:sf="{SF_NS}">{fx}</sObject></Notification>')
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_NS}" xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
        f'xmlns:xsi="{XSI_NS}"><soapenv:Body><notifications xmlns="{OM_NS}">'
        f"<OrganizationId>{escape(org_id)}</OrganizationId><ActionId>{action_id}</ActionId>"
        "<SessionId xsi:nil=\"true\"/><EnterpriseUrl>https://example.my.salesforce.com/services/Soap/c/62.0</EnterpriseUrl>"
        "<PartnerUrl>https://example.my.salesforce.com/services/Soap/u/62.0</PartnerUrl>"
        + "".join(parts) + "</notifications></soapenv:Body></soapenv:Envelope>"
    ).encode()


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
