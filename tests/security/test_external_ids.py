"""External ids from callbacks go into outbound URL paths (with the bearer token attached): each is checked against
its system's format at intake (refused 400, stored, naming the field), and every client encodes every path
segment it builds, so an id can never walk to another resource (issue 14, path injection)."""

from __future__ import annotations

import json
import random

import pytest
from rest_framework.test import APIClient

from apps.connectors import ids
from apps.connectors.base import DownstreamError, path
from apps.connectors.hubspot.client import HubSpotClient
from apps.connectors.kantata.client import KantataClient
from apps.connectors.netsuite.client import NetSuiteClient
from apps.connectors.salesforce.client import SalesforceClient
from apps.connectors.salesforce.inbound import build_outbound_message
from apps.demo.deals import make_opportunity
from apps.demo.finance_plan import amendment_fields
from apps.demo.firm import SALESFORCE_ORG
from apps.sandbox.credentials import INBOUND_SECRETS
from apps.sync.models import InboundEvent, SyncRecord
from tests.callbacks import SALESFORCE_PATH, deal_event, post_hubspot, post_standard_webhook, post_stripe, salesforce_id

# ------------------------------------------------------------------ the formats


def test_a_salesforce_id_is_15_characters_or_18_with_its_checksum():
    assert ids.salesforce_id("0065g00000ABCDE") == "0065g00000ABCDE"
    assert ids.salesforce_id18("0065g00000ABCDE") == "0065g00000ABCDEAA5"
    assert ids.salesforce_id(SALESFORCE_ORG) == SALESFORCE_ORG  # Salesforce's own 18-character org id
    for bad in ["0065g00000ABCDEAA2",  # the checksum of another id
                "0065G00000ABCDEAA5",  # one letter's case changed: the checksum no longer matches
                "0065g00000ABCDEaa5",  # a suffix is upper case and digits
                "0065g00000ABCD", "0065g00000ABCDEAA5X", "../Account/001", "006 5g00000ABCD", "", None, 6]:
        with pytest.raises(ValueError):
            ids.salesforce_id(bad)


@pytest.mark.parametrize("check", [ids.hubspot_id, ids.kantata_id, ids.netsuite_id])
def test_hubspot_kantata_and_netsuite_ids_are_positive_whole_numbers(check):
    assert check(123) == "123" and check("9007199254740993") == "9007199254740993"
    for bad in ["../../companies/1", "1/2", "12\x003", "0", "-1", "01", "1.0", "1e3", " ", "", True, 1.5, None,
                "1" * 20]:
        with pytest.raises(ValueError):
            check(bad)


def test_a_stripe_id_is_its_prefix_then_letters_and_digits():
    assert ids.stripe_id("evt_1NG8Du2eZvKYlo2CUI79vXWy", "evt") == "evt_1NG8Du2eZvKYlo2CUI79vXWy"
    assert ids.stripe_id("in_1MtHbELkdIwHu7ixl4OzzPMv") == "in_1MtHbELkdIwHu7ixl4OzzPMv"
    for bad, prefix in [("in_1", "evt"), ("in_../x", "in"), ("in_", "in"), ("in_a/b", ""), ("evt", ""),
                        ("IN_1", "in"), (123, "")]:
        with pytest.raises(ValueError):
            ids.stripe_id(bad, prefix)


# ------------------------------------------------------------------ refused at intake


def _only_rejection(response, field: str) -> InboundEvent:
    assert response.status_code == 400, response.content
    event = InboundEvent.objects.get()
    assert event.status == "rejected" and field in event.reason, event.reason
    assert not SyncRecord.objects.exists()
    return event


@pytest.mark.django_db
@pytest.mark.parametrize("bad_id", ["../Account/001SB000000001", "006SB0000000001/../../Account",
                                    "006SB000000000100A"])
def test_a_salesforce_notification_with_an_id_not_in_salesforce_format_is_refused(connections, bad_id):
    fields = make_opportunity(random.Random(1), "good").as_salesforce(bad_id, salesforce_id("001SB"))
    body = build_outbound_message(org_id=SALESFORCE_ORG, notifications=[("04lPATH1", fields)])

    response = APIClient().post(SALESFORCE_PATH, data=body, content_type="text/xml")

    assert b"soapenv:Fault" in response.content
    _only_rejection(response, "Opportunity Id")


@pytest.mark.django_db
def test_a_salesforce_amendment_with_a_path_for_an_id_is_refused(connections):
    fields = amendment_fields("../Opportunity/006SB0000000001", salesforce_id("006SB"))
    body = build_outbound_message(org_id=SALESFORCE_ORG, notifications=[("04lPATH2", fields)],
                                  sobject_type="Contract_Amendment__c")

    _only_rejection(APIClient().post(SALESFORCE_PATH, data=body, content_type="text/xml"),
                    "Contract_Amendment__c Id")


@pytest.mark.django_db
@pytest.mark.parametrize("event", [deal_event(deal_id="../../companies/1"), deal_event(deal_id="1/../../x"),
                                   deal_event(event_id="1; DROP", deal_id=5),
                                   deal_event(deal_id="../../companies/1", propertyName="amendment_status",
                                              stage="approved")])
def test_a_hubspot_event_with_an_id_that_is_not_a_number_is_refused(connections, event):
    response = post_hubspot(APIClient(), [event])

    _only_rejection(response, "objectId" if event["eventId"] == 1001 else "eventId")


def _post_signed(system: str, envelope: dict):
    return post_standard_webhook(APIClient(), f"/api/v1/callbacks/{system}/", INBOUND_SECRETS[system], envelope)


@pytest.mark.django_db
def test_a_netsuite_payment_applied_to_a_path_is_refused(connections):
    envelope = {"type": "customerpayment.created", "timestamp": "2026-11-20T10:00:00Z", "data": {
        "id": "9", "payment": "10.00", "currency": {"refName": "USD"}, "lastModifiedDate": "2026-11-20T10:00:00Z",
        "apply": {"items": [{"doc": {"id": "../customer/1"}, "amount": "10.00", "apply": True}]}}}

    _only_rejection(_post_signed("netsuite", envelope), "apply.items[0].doc.id")


@pytest.mark.django_db
def test_a_netsuite_record_whose_id_is_not_a_number_is_refused(connections):
    envelope = {"type": "invoice.created", "timestamp": "2026-11-20T10:00:00Z", "data": {
        "id": "501/../../customer/1", "total": "1.00", "currency": {"refName": "USD"},
        "lastModifiedDate": "2026-11-20T10:00:00Z"}}

    _only_rejection(_post_signed("netsuite", envelope), "id")


@pytest.mark.django_db
def test_a_kantata_time_entry_on_a_workspace_that_is_not_a_number_is_refused(connections):
    envelope = {"type": "time_entry.approved", "timestamp": "2026-11-20T10:00:00Z", "data": {
        "id": 41, "workspace_id": "../../workspaces/7", "date_performed": "2026-11-19", "time_in_minutes": 60,
        "approved": True, "updated_at": "2026-11-20T10:00:00Z"}}

    _only_rejection(_post_signed("kantata", envelope), "workspace_id")


@pytest.mark.django_db
def test_a_stripe_dispute_naming_a_charge_that_is_not_a_stripe_id_is_refused(connections):
    event = {"id": "evt_1PATH", "object": "event", "type": "charge.dispute.created", "created": 1795000000,
             "data": {"object": {"id": "dp_1PATH", "object": "dispute", "charge": "ch_1/../../customers/cus_1",
                                 "amount": 1000, "currency": "usd"}}}

    response = post_stripe(APIClient(), event)

    _only_rejection(response, "data.object.charge")


# ------------------------------------------------------------------ encoded by every client


class Urls:
    """An attempt recorder that keeps the path of every call a client makes."""

    def __init__(self):
        self.paths = []

    def start(self, *, system, method, url, summary):
        self.paths.append(url)

    def finish(self, handle, **kw):
        pass


ODD = "../../companies/1?x=#"


@pytest.mark.django_db
@pytest.mark.parametrize("kind, client_class, call, expected", [
    ("hubspot", HubSpotClient, lambda c: c.get_deal(ODD), "/crm/v3/objects/deals/..%2F..%2Fcompanies%2F1%3Fx%3D%23"),
    ("hubspot", HubSpotClient, lambda c: c.update_company(ODD, {}),
     "/crm/v3/objects/companies/..%2F..%2Fcompanies%2F1%3Fx%3D%23"),
    ("salesforce", SalesforceClient, lambda c: c.get_account(".."), "/services/data/v62.0/sobjects/Account/%2E%2E"),
    ("salesforce", SalesforceClient, lambda c: c.update_opportunity("../Account/001", {}),
     "/services/data/v62.0/sobjects/Opportunity/..%2FAccount%2F001"),
    ("netsuite", NetSuiteClient, lambda c: c.get_customer("1/../../job/2"),
     "/services/rest/record/v1/customer/1%2F..%2F..%2Fjob%2F2"),
    ("netsuite", NetSuiteClient, lambda c: c.upsert_customer("HO-1/../x", {}),
     "/services/rest/record/v1/customer/eid:HO-1%2F..%2Fx"),
    ("kantata", KantataClient, lambda c: c.update_workspace("7/../../users", {}),
     "/api/v1/workspaces/7%2F..%2F..%2Fusers.json"),
])
def test_every_client_encodes_each_path_segment(connections, kind, client_class, call, expected):
    urls = Urls()
    client = client_class(connections[kind], recorder=urls)

    with pytest.raises(DownstreamError):  # nothing listens on the connections' address
        call(client)

    assert urls.paths == [expected]


def test_the_path_helper_encodes_every_segment_on_its_own():
    assert path("/services/data", "v62.0", "sobjects", "Account", "001/../x") == \
        "/services/data/v62.0/sobjects/Account/001%2F..%2Fx"
    assert path("/x/", ".", "..", "a b", "ü") == "/x/%2E/%2E%2E/a%20b/%C3%BC"
