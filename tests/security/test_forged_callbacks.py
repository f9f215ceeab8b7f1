"""Forged Salesforce Outbound Messages (issue 14, inbound trust).

Salesforce does not sign its messages and the org id they carry is not a secret. So a message is taken in only on
the connection's secret callback URL, and it is only a trigger: what is written comes from the Salesforce REST
API (the sandbox, here), never from the message. Mallory knows the org id and an opportunity's id; she does not
know the URL secret — and when she does, she still cannot change what is written.
"""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.canonical.models import Customer, Engagement, EngagementChange, ExternalId
from apps.connectors.salesforce.inbound import build_outbound_message
from apps.demo.deals import make_opportunity
from apps.demo.finance_plan import amendment_fields
from apps.demo.firm import SALESFORCE_ORG
from apps.sandbox.credentials import CALLBACK_URL_SECRETS
from apps.sandbox.models import SandboxObject
from apps.sync.callback_secrets import callback_secret_matches
from apps.sync.models import AuditEntry, Connection, InboundEvent, SyncRecord
from tests.callbacks import SALESFORCE_PATH, salesforce_id
from tests.worker import run_worker, sandbox_count

OPP = salesforce_id("006FORGED")


def _message(notifications, sobject_type="Opportunity") -> bytes:
    return build_outbound_message(org_id=SALESFORCE_ORG, notifications=notifications, sobject_type=sobject_type)


def _won_fields(**overrides) -> dict:
    fields = make_opportunity(random.Random(7), "good").as_salesforce(OPP, salesforce_id("001FORGED"))
    fields.update(overrides)
    return fields


def _post(client, path: str, body: bytes):
    return client.post(path, data=body, content_type="text/xml; charset=utf-8", HTTP_SOAPACTION='""')


# ------------------------------------------------------------------ the secret URL


@pytest.mark.django_db
@pytest.mark.parametrize("path, reason", [
    ("/api/v1/callbacks/salesforce/", "secret URL"),  # the documented URL shape without the secret
    ("/api/v1/callbacks/salesforce/not-the-secret/", "wrong secret"),
    (SALESFORCE_PATH.replace(CALLBACK_URL_SECRETS["salesforce"], CALLBACK_URL_SECRETS["salesforce"].upper()),
     "wrong secret"),
])
def test_an_outbound_message_without_the_url_secret_is_refused_and_stored(connections, path, reason):
    body = _message([("04lFORGED1", _won_fields(Amount="9999999.00"))])  # the right org id: not a secret

    response = _post(APIClient(), path, body)

    assert response.status_code == 401 and b"soapenv:Fault" in response.content
    event = InboundEvent.objects.get()
    assert (event.status, event.verified, event.http_status) == ("rejected", False, 401)
    assert reason in event.reason and CALLBACK_URL_SECRETS["salesforce"] not in event.reason
    assert event.raw_body  # what was sent, kept for the admin (an excerpt: apps/sync/refusals.py)
    assert event.payload == {} and event.workflow == ""
    assert not SyncRecord.objects.exists() and not Customer.objects.filter(name__contains="Forged").exists()


@pytest.mark.django_db
def test_a_signed_system_has_no_secret_url(connections):
    response = APIClient().post("/api/v1/callbacks/hubspot/anything/", data=b"[]", content_type="application/json")

    assert response.status_code == 404
    assert "signed" in InboundEvent.objects.get(status="rejected").reason


@pytest.mark.django_db
def test_the_url_secret_is_stored_only_as_a_hash(connections):
    conn = Connection.objects.get(slug="salesforce")
    assert CALLBACK_URL_SECRETS["salesforce"] not in str(Connection.objects.filter(pk=conn.pk).values().get())
    assert callback_secret_matches(conn, CALLBACK_URL_SECRETS["salesforce"])
    assert not callback_secret_matches(conn, "") and not callback_secret_matches(conn, "x")


@pytest.mark.django_db
def test_rotating_the_url_secret_keeps_the_old_one_for_the_grace_period_then_refuses_it(client, carol,
                                                                                        connections, settings):
    settings.HANDOFF_PUBLIC_URL = "https://handoff.example.com"
    conn = connections["salesforce"]
    old = CALLBACK_URL_SECRETS["salesforce"]
    client.force_login(carol)

    response = client.post(f"/connections/{conn.pk}/rotate-secret/", {"reason": "yearly rotation"})

    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    html = response.content.decode()
    prefix = "https://handoff.example.com/api/v1/callbacks/salesforce/"
    new = html.split(prefix, 1)[1].split("/", 1)[0]  # the Endpoint URL is shown once, in full
    assert len(new) >= 40 and new != old
    conn.refresh_from_db()
    assert callback_secret_matches(conn, new) and callback_secret_matches(conn, old)  # both, for now
    entry = AuditEntry.objects.get(action="rotate_callback_url_secret")
    assert entry.actor == carol and entry.reason == "yearly rotation"
    assert new not in str(entry.before) + str(entry.after) and old not in str(entry.before) + str(entry.after)
    body = _message([("04lROT1", _won_fields())])
    assert _post(APIClient(), f"/api/v1/callbacks/salesforce/{old}/", body).status_code == 200

    Connection.objects.filter(pk=conn.pk).update(callback_secret_previous_until=timezone.now() - timedelta(seconds=1))

    assert _post(APIClient(), f"/api/v1/callbacks/salesforce/{old}/", body).status_code == 401
    assert _post(APIClient(), f"/api/v1/callbacks/salesforce/{new}/", body).status_code == 200
    assert InboundEvent.objects.filter(status="received").count() == 1  # the redelivery is stored once


# ------------------------------------------------------------------ the REST record wins


def _won(deliverer, *, amount: str) -> Engagement:
    """An opportunity won in Salesforce (the sandbox) for `amount`, set up through Handoff."""
    opp = make_opportunity(random.Random(11), "good")
    opp.amount = amount
    deliverer.deliver(opp, via="salesforce")
    run_worker()
    record = SyncRecord.objects.get(workflow="quote_to_project")
    assert record.status == "succeeded", record.message
    link = ExternalId.objects.get(system="salesforce", object_type="opportunity")
    return Engagement.objects.get(pk=link.object_id)


def test_the_opportunity_is_written_as_the_rest_api_returns_it_not_as_the_message_says(deliverer):
    opp = make_opportunity(random.Random(3), "good")
    opp.amount = "348000.00"
    opp_id, fields = deliverer.create_salesforce(opp)  # Salesforce holds 348,000.00 and the real account
    forged = {**fields, "Amount": "9999999.00", "Account_Name__c": "Mallory Holdings",
              "Account_Tax_Id__c": "MALLORY-1", "Legal_Entity__c": opp.legal_entity}

    response = deliverer.send_salesforce([(f"04l{opp_id[3:]}", forged)])
    run_worker()

    assert response.status_code == 200 and b"<Ack>true</Ack>" in response.content
    record = SyncRecord.objects.get()
    assert record.status == "succeeded", record.message
    e = Engagement.objects.select_related("customer").get()
    assert e.contract_value == Decimal("348000.00")
    assert (e.customer.name, e.customer.tax_id) == (opp.account, opp.tax_id)
    assert not Customer.objects.filter(name="Mallory Holdings").exists()
    assert record.original_payload["amount"] == "348000.00"
    erp = SandboxObject.objects.filter(system="netsuite", object_type="customer")
    assert [c.data["companyName"] for c in erp] == [opp.account]


def test_an_opportunity_the_rest_api_does_not_show_as_won_is_held_and_nothing_is_set_up(deliverer):
    opp = make_opportunity(random.Random(4), "good")
    opp_id, fields = deliverer.create_salesforce(opp)
    deliverer.store_salesforce("Opportunity", {"Id": opp_id, "StageName": "Prospecting", "IsWon": "false"})
    customers, erp_customers = Customer.objects.count(), sandbox_count("netsuite", "customer")

    deliverer.send_salesforce([(f"04l{opp_id[3:]}", fields)])  # the message says Closed Won
    run_worker()

    record = SyncRecord.objects.get()
    assert (record.status, record.stage, record.reason_code) == ("held", "fetch", "opportunity_not_won")
    assert "Prospecting" in record.message and record.owner_team == "pmo"
    assert Customer.objects.count() == customers and not Engagement.objects.exists()
    assert sandbox_count("netsuite", "customer") == erp_customers and sandbox_count("kantata", "workspace") == 0


def test_a_notification_of_an_opportunity_salesforce_does_not_have_is_held(deliverer):
    deliverer.send_salesforce([("04lGHOST1", _won_fields())])  # OPP exists nowhere
    run_worker()

    record = SyncRecord.objects.get()
    assert (record.status, record.reason_code) == ("held", "source_not_found")
    assert not Engagement.objects.exists()


def test_a_forged_amendment_changes_nothing_the_rest_api_does_not_confirm(deliverer):
    e = _won(deliverer, amount="348000.00")
    opp_id = ExternalId.objects.get(system="salesforce", object_type="opportunity").external_id
    draft = salesforce_id("a0AFORGED1")
    deliverer.store_salesforce("Contract_Amendment__c",
           amendment_fields(draft, opp_id, amended_amount="350000.00", status="Draft"))
    forged = amendment_fields(draft, opp_id, amended_amount="9999999.00")  # "Approved", says the message
    ghost = amendment_fields(salesforce_id("a0AGHOST1"), opp_id, amended_amount="9999999.00")

    deliverer.send_salesforce([("04lAMDF1", forged), ("04lAMDF2", ghost)], sobject_type="Contract_Amendment__c")
    run_worker()

    held = dict(SyncRecord.objects.filter(workflow="change_order").values_list("source_key", "reason_code"))
    assert held == {f"amendment:{draft}": "amendment_not_approved",
                    f"amendment:{salesforce_id('a0AGHOST1')}": "source_not_found"}
    e.refresh_from_db()
    assert e.contract_value == Decimal("348000.00")
    assert not EngagementChange.objects.exists()


def test_an_approved_amendment_applies_the_rest_api_value_not_the_message_value(deliverer):
    e = _won(deliverer, amount="348000.00")
    opp_id = ExternalId.objects.get(system="salesforce", object_type="opportunity").external_id
    amendment = salesforce_id("a0AREAL1")
    deliverer.store_salesforce("Contract_Amendment__c", amendment_fields(amendment, opp_id, amended_amount="360000.00"))
    forged = amendment_fields(amendment, opp_id, amended_amount="9999999.00")

    deliverer.send_salesforce([("04lAMDR1", forged)], sobject_type="Contract_Amendment__c")
    run_worker()

    record = SyncRecord.objects.get(workflow="change_order")
    assert record.status == "succeeded", record.message
    e.refresh_from_db()
    assert e.contract_value == Decimal("360000.00")
    assert EngagementChange.objects.get().after["contract_value"] == "360000.00"
