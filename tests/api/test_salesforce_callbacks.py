"""Salesforce Outbound Messages at POST /api/v1/callbacks/salesforce/: the SOAP ack, the organisation id that
is the trust check, XML that is refused (malformed, not an Outbound Message, DTDs and entities), notifications it
does not act on (acked, stored as ignored), redeliveries counted once, and SOAP faults that escape the reason."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from apps.demo.firm import SALESFORCE_ORG
from apps.sync.intake import process_inbox
from apps.sync.models import Connection, InboundEvent, SyncRecord

from tests.callbacks import OPP_ID, assert_only_rejection, opportunity_fields, outbound, post_salesforce, salesforce_id

pytestmark = pytest.mark.django_db


# ------------------------------------------------------------------ Salesforce


def test_it_acks_a_salesforce_outbound_message_and_stores_the_opportunity(api, connections):
    fields = opportunity_fields(seed=1, opp_id=OPP_ID)
    response = post_salesforce(api, outbound([("04l000000000001AAA", fields)]))

    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/xml")
    assert b"<Ack>true</Ack>" in response.content
    event = InboundEvent.objects.get()
    assert event.status == InboundEvent.Status.RECEIVED
    assert event.verified is True
    assert event.http_status == 200
    assert event.connection == connections["salesforce"]
    assert event.event_id == "04l000000000001AAA"
    assert event.event_type == "outbound_message:Opportunity"
    assert event.workflow == "quote_to_project"
    assert event.source_key == f"opportunity:{OPP_ID}"
    assert event.title == f"Salesforce opportunity {OPP_ID}"
    # a trigger only: the record's id, the notification's id and its stamp (ordering); the workflow reads the
    # Opportunity through the REST API (tests/security/test_forged_callbacks.py)
    assert event.payload == {"opportunity_id": OPP_ID, "notification_id": "04l000000000001AAA",
                             "source_modified_at": fields["SystemModstamp"]}
    assert json.loads(event.raw_body)["fields"]["Amount"] == fields["Amount"]  # what was sent, kept as sent


def test_it_accepts_an_18_character_org_id_matching_on_its_15_character_prefix(api, connections):
    org15 = SALESFORCE_ORG[:15]
    response = post_salesforce(api, outbound([("04l1", opportunity_fields())], org_id=org15 + "ZZZ"))

    assert response.status_code == 200 and b"<Ack>true</Ack>" in response.content
    assert InboundEvent.objects.get().status == InboundEvent.Status.RECEIVED


def test_it_rejects_an_outbound_message_from_another_org(api, connections):
    response = post_salesforce(api, outbound([("04l1", opportunity_fields())], org_id="00D000000000001AAA"))

    assert_only_rejection(response, 401, connection="salesforce", reason_contains="OrganizationId")
    assert response["Content-Type"].startswith("text/xml")
    assert b"<soapenv:Fault>" in response.content and b"<faultstring>" in response.content
    assert b"<Ack>" not in response.content


def test_it_rejects_an_org_id_that_differs_only_in_case(api, connections):
    response = post_salesforce(api, outbound([("04l1", opportunity_fields())],
                                             org_id=SALESFORCE_ORG[:15].lower() + SALESFORCE_ORG[15:]))

    assert_only_rejection(response, 401, connection="salesforce")


def test_it_rejects_an_outbound_message_without_an_org_id(api, connections):
    response = post_salesforce(api, outbound([("04l1", opportunity_fields())], org_id=""))

    assert_only_rejection(response, 401, connection="salesforce", reason_contains="missing")
    assert b"soapenv:Fault" in response.content


def test_it_rejects_malformed_xml(api, connections):
    body = outbound([("04l1", opportunity_fields())])[:-30]
    response = post_salesforce(api, body)

    assert_only_rejection(response, 400, connection="salesforce", reason_contains="malformed XML")
    assert b"soapenv:Fault" in response.content


def test_it_rejects_xml_that_is_not_an_outbound_message(api, connections):
    response = post_salesforce(api, b"<?xml version='1.0'?><hello>world</hello>")

    assert_only_rejection(response, 400, connection="salesforce", reason_contains="notifications")


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>
<notifications xmlns="http://soap.sforce.com/2005/09/outbound"><OrganizationId>&lol9;</OrganizationId>
</notifications></soapenv:Body></soapenv:Envelope>"""


def _with_doctype(doctype: bytes) -> bytes:
    """A genuine Outbound Message (right org) with a DOCTYPE inserted and an entity used in a field."""
    fields = opportunity_fields(Name="ENTITY_HERE")
    body = outbound([("04l1", fields)])
    decl, rest = body.split(b"?>", 1)
    return decl + b"?>" + doctype + rest.replace(b"ENTITY_HERE", b"&x;")


@pytest.mark.parametrize("body", [
    BILLION_LAUGHS,
    _with_doctype(b'<!DOCTYPE e [<!ENTITY x "expanded">]>'),
    _with_doctype(b'<!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>'),
    _with_doctype(b'<!DOCTYPE e [<!ENTITY x SYSTEM "http://127.0.0.1:9/evil">]>'),
    _with_doctype(b'<!DOCTYPE e SYSTEM "http://127.0.0.1:9/evil.dtd"><!-- &x; -->').replace(b"&x;", b"x"),
], ids=["billion-laughs", "internal-entity", "external-file", "external-url", "external-dtd"])
def test_it_refuses_xml_with_a_dtd_or_entities(api, connections, body):
    response = post_salesforce(api, body)

    event = assert_only_rejection(response, 400, connection="salesforce", reason_contains="DTD")
    assert "lollol" not in event.raw_body and "root:" not in event.raw_body
    assert b"soapenv:Fault" in response.content


def test_it_acks_a_non_opportunity_sobject_and_stores_it_as_ignored(api, connections):
    body = outbound([("04lACC1", {"Id": salesforce_id("001SB0000000009"), "Name": "Acme"})], sobject_type="Account")
    response = post_salesforce(api, body)

    assert response.status_code == 200 and b"<Ack>true</Ack>" in response.content
    event = InboundEvent.objects.get()
    assert event.status == InboundEvent.Status.IGNORED
    assert event.verified is True
    assert "Account" in event.reason
    assert event.event_type == "outbound_message:Account"
    process_inbox()
    assert SyncRecord.objects.count() == 0


def test_it_acks_an_opportunity_that_is_not_won_and_stores_it_as_ignored(api, connections):
    fields = opportunity_fields(StageName="Negotiation", IsWon="false")
    response = post_salesforce(api, outbound([("04lNEG1", fields)]))

    assert response.status_code == 200 and b"<Ack>true</Ack>" in response.content
    event = InboundEvent.objects.get()
    assert event.status == InboundEvent.Status.IGNORED
    assert "Negotiation" in event.reason
    process_inbox()
    assert SyncRecord.objects.count() == 0


def test_it_acks_a_redelivered_outbound_message_and_counts_it_once(api, connections):
    body = outbound([("04lRE1", opportunity_fields())])
    responses = [post_salesforce(api, body) for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert all(b"<Ack>true</Ack>" in r.content for r in responses)
    event = InboundEvent.objects.get()
    assert event.deliveries == 3
    assert event.status == InboundEvent.Status.RECEIVED


def test_it_stores_each_notification_of_a_message(api, connections):
    a, b = salesforce_id("006A"), salesforce_id("006B")
    body = outbound([("04lA", opportunity_fields(seed=1, opp_id=a)),
                     ("04lB", opportunity_fields(seed=2, opp_id=b)),
                     ("04lA", opportunity_fields(seed=1, opp_id=a))])
    response = post_salesforce(api, body)

    assert response.status_code == 200
    assert sorted(InboundEvent.objects.values_list("source_key", flat=True)) == [
        f"opportunity:{a}", f"opportunity:{b}"]


def test_it_rejects_a_notification_without_an_id(api, connections):
    response = post_salesforce(api, outbound([("", opportunity_fields())]))

    assert_only_rejection(response, 400, connection="salesforce", reason_contains="<Id>")


def test_it_rejects_a_won_opportunity_without_an_id(api, connections):
    fields = opportunity_fields()
    del fields["Id"]
    response = post_salesforce(api, outbound([("04l1", fields)]))

    assert_only_rejection(response, 400, connection="salesforce", reason_contains="no Id")


def test_it_rejects_an_outbound_message_with_no_notification(api, connections):
    response = post_salesforce(api, outbound([]))

    assert_only_rejection(response, 400, connection="salesforce", reason_contains="no <Notification>")


def test_it_rejects_an_outbound_message_with_the_wrong_content_type(api, connections):
    response = post_salesforce(api, outbound([("04l1", opportunity_fields())]), content_type="application/json")

    assert_only_rejection(response, 415, connection="salesforce", reason_contains="text/xml")
    assert b"soapenv:Fault" in response.content


def test_it_rejects_an_outbound_message_to_a_disabled_connection(api, connections):
    Connection.objects.filter(slug="salesforce").update(enabled=False)
    response = post_salesforce(api, outbound([("04l1", opportunity_fields())]))

    assert_only_rejection(response, 403, connection="salesforce", reason_contains="disabled")
    assert b"soapenv:Fault" in response.content


@override_settings(HANDOFF_MAX_CALLBACK_BYTES=2048)
def test_it_rejects_an_oversize_outbound_message(api, connections):
    body = outbound([(f"04l{i}", opportunity_fields(seed=i, opp_id=salesforce_id(f"006{i}"))) for i in range(5)])
    assert len(body) > 2048
    response = post_salesforce(api, body)

    assert_only_rejection(response, 413, connection="salesforce")
    assert b"soapenv:Fault" in response.content


def test_it_stores_script_and_html_in_salesforce_fields_verbatim(api, connections):
    nasty = '<script>alert("pwned")</script> & <b onmouseover="x()">Bold</b>'
    fields = opportunity_fields(Name=nasty, Account_Name__c=nasty, Legal_Entity__c="<i>US01</i>")
    response = post_salesforce(api, outbound([("04lXSS", fields)]))

    assert response.status_code == 200
    event = InboundEvent.objects.get()
    stored = json.loads(event.raw_body)["fields"]
    assert stored["Name"] == nasty
    assert stored["Account_Name__c"] == nasty
    assert stored["Legal_Entity__c"] == "<i>US01</i>"
    # what the message says is never the record's data: the REST API's values are (read by the fetch stage)
    process_inbox()
    record = SyncRecord.objects.get()
    assert nasty not in json.dumps(record.original_payload)


def test_a_rejected_body_with_markup_is_stored_verbatim(api, connections):
    body = b"<script>alert(1)</script>"
    response = post_salesforce(api, body)

    event = assert_only_rejection(response, 400, connection="salesforce")
    assert event.raw_body == "<script>alert(1)</script>"


def test_a_soap_fault_escapes_the_reason(api, connections):
    response = post_salesforce(api, b"<a><b></a>")

    assert response.status_code == 400
    fault = response.content.decode()
    assert fault.count("<faultstring>") == 1
    from defusedxml.ElementTree import fromstring

    fromstring(response.content)  # the fault itself is well-formed XML
