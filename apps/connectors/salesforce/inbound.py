"""Salesforce Outbound Messages (SOAP): checked against the org id, parsed, answered with the documented Ack —
every refusal of a Salesforce callback is made in this file.

Salesforce does not sign Outbound Messages, and the organization id they carry is not a secret. So a message is
taken in only on the connection's secret callback URL (the intake checks it, apps/sync/callback_secrets.py), its
org id must match the connection's, and it is only a trigger: each notification keeps the record's id (checked
as a Salesforce id, since it goes into the REST URL), the notification id (the event id, so a redelivery is
stored once) and its SystemModstamp (ordering only). The workflow's fetch stage reads the Opportunity, its Account
or the Contract_Amendment__c through the REST API and uses only what that returns. Salesforce documents, in
addition, restricting the endpoint to its IP ranges and checking its TLS client certificate (docs/operations.md).
Salesforce retries a message until it gets the Ack, and reads a refusal as a SOAP fault.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from defusedxml import ElementTree as DET
from defusedxml.common import DefusedXmlException

from apps.connectors import ids
from apps.connectors.callbacks import EventSpec, Rejected, checked_id, media_type
from apps.finance.invoicing import parse_time

from .mapping import SF_NS, XSI_NS, field_text

OM_NS = "http://soap.sforce.com/2005/09/outbound"
SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
XML_MEDIA_TYPES = ("text/xml", "application/soap+xml", "application/xml")

ACK = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    f'<soapenv:Envelope xmlns:soapenv="{SOAP_NS}"><soapenv:Body>'
    f'<notificationsResponse xmlns="{OM_NS}"><Ack>true</Ack></notificationsResponse>'
    "</soapenv:Body></soapenv:Envelope>"
)


def soap_fault(message: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_NS}"><soapenv:Body><soapenv:Fault>'
        f"<faultcode>soapenv:Client</faultcode><faultstring>{escape(message)}</faultstring>"
        "</soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    )


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
        spec = EventSpec(event_id=nid, event_type=f"outbound_message:{sotype}"[:100],
                         body={"sObject": sotype, "fields": {el.tag.split('}')[-1]: (el.text or "") for el in so}})
        if sotype == "Contract_Amendment__c":
            # what the message says only decides whether to look: the workflow reads the record through the API
            if field_text(so, "Status__c").lower() != "approved":
                spec.ignored = f"amendment status {field_text(so, 'Status__c')!r} is not Approved"
            else:
                _trigger(spec, so, nid, "change_order", "amendment", "Change order")
        elif sotype != "Opportunity":
            spec.ignored = f"no workflow acts on {sotype} outbound messages"
        elif field_text(so, "StageName") not in won_stages and field_text(so, "IsWon").lower() != "true":
            spec.ignored = f"stage {field_text(so, 'StageName')!r} is not closed-won"
        else:
            _trigger(spec, so, nid, "quote_to_project", "opportunity", "Salesforce opportunity")
        out.append(spec)
    if not out:
        raise Rejected(400, "the Outbound Message holds no <Notification>")
    if len(out) > 100:
        raise Rejected(400, "Salesforce sends at most 100 notifications per message")
    return out


def _trigger(spec: EventSpec, so, notification_id: str, workflow: str, key: str, title: str) -> None:
    """A notification that starts a record: only the record's id (checked: it goes into the REST URL) and the
    modification stamp (which orders notifications of the same record) are kept; the workflow's fetch stage
    reads every value through the REST API."""
    sotype = spec.event_type.split(":", 1)[1]
    if not field_text(so, "Id"):
        raise Rejected(400, f"the {sotype} has no Id")
    record_id = checked_id(ids.salesforce_id, field_text(so, "Id"), f"the {sotype} Id", "Salesforce")
    modified = field_text(so, "SystemModstamp")
    spec.workflow = workflow
    spec.source_key = f"{key}:{record_id}"
    spec.payload = {f"{key}_id": record_id, "notification_id": notification_id,
                    "source_modified_at": modified if parse_time(modified) else ""}
    spec.title = f"{title} {record_id}"


def verify_and_parse(conn, *, method: str, uris: list[str], body: bytes, headers) -> list[EventSpec]:
    if media_type(headers) not in XML_MEDIA_TYPES:
        raise Rejected(415, "Salesforce Outbound Messages must be sent as text/xml")
    return parse_notifications(conn, body)


def build_outbound_message(*, org_id: str, notifications: list[tuple[str, dict]], action_id: str = "04k000000000001",
                           sobject_type: str = "Opportunity") -> bytes:
    """An Outbound Message as Salesforce sends it (used by the sandbox CRM and the tests)."""
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


