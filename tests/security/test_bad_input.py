"""Bad input to the callbacks: a clear 4xx, stored, never a 500 and never a silent change (issue 14).

Each class of input that answered 500 (and stored nothing, so the sender retried forever) or was silently taken in
has its test: over-long timestamp headers, `1e400`, an event id longer than the column, a time that is no time,
NaN, a key twice in one object, money through float, more decimals than the currency has, a negative payment,
and signatures dated ahead of now.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from apps.connectors.base import exact_json
from apps.sandbox.credentials import INBOUND_SECRETS
from apps.sync.intake import process_inbox
from apps.sync.models import InboundEvent, SyncRecord
from apps.sync.workflows import invoice_payment_to_crm, quote_to_project
from tests.callbacks import deal_event, post_hubspot, post_standard_webhook, post_stripe

pytestmark = pytest.mark.django_db

LONG_NUMBER = "9" * 400  # int() reads it; float arithmetic on it overflows


def refused(response, status: int, words: str) -> InboundEvent:
    """Answered `status` (a 4xx, not a 500), stored as a rejection naming what is wrong, nothing processed."""
    assert response.status_code == status, response.content
    event = InboundEvent.objects.get()
    assert (event.status, event.http_status) == ("rejected", status)
    assert words in event.reason, event.reason
    assert process_inbox()["records"] == 0 and not SyncRecord.objects.exists()
    return event


def post_hubspot_raw(body: bytes, ts: str):
    return post_hubspot(APIClient(), body, ts=ts)


def post_standard(system: str, body: dict | bytes, *, msg_id: str | None = None, timestamp=None):
    return post_standard_webhook(APIClient(), f"/api/v1/callbacks/{system}/", INBOUND_SECRETS[system], body,
                                 msg_id=msg_id, ts=timestamp)


def post_stripe_body(body: bytes, t: int | None = None):
    return post_stripe(APIClient(), body, t=t)


def stripe_event(**invoice) -> dict:
    obj = {"id": "in_1BAD", "object": "invoice", "number": "A-1", "currency": "usd", "total": 150000,
           "amount_paid": 0, "amount_remaining": 150000, "status": "open", "customer": "cus_1BAD"}
    obj.update(invoice)
    return {"id": "evt_1BAD", "object": "event", "type": "invoice.finalized", "created": int(time.time()),
            "data": {"object": obj}}


def ns_invoice_envelope(**data) -> dict:
    record = {"id": "501", "tranId": "INV501", "entity": {"id": "77"}, "currency": {"refName": "USD"},
              "total": "1500.00", "amountPaid": "0.00", "amountRemaining": "1500.00", "status": {"id": "open"},
              "tranDate": "2026-11-01", "dueDate": "2026-12-01", "lastModifiedDate": "2026-11-20T10:00:00Z"}
    record.update(data)
    return {"type": "invoice.created", "timestamp": "2026-11-20T10:00:00Z", "data": record}


def ns_payment_envelope(amount: str) -> dict:
    return {"type": "customerpayment.created", "timestamp": "2026-11-20T10:00:00Z", "data": {
        "id": "9", "tranId": "PAY9", "payment": amount, "currency": {"refName": "USD"}, "tranDate": "2026-11-20",
        "lastModifiedDate": "2026-11-20T10:00:00Z",
        "apply": {"items": [{"doc": {"id": "501"}, "amount": amount, "apply": True}]}}}


# ------------------------------------------------------------------ 500s that are now refusals


def test_an_over_long_hubspot_timestamp_is_a_401_not_an_overflow(connections):
    response = post_hubspot_raw(json.dumps([deal_event()]).encode(), LONG_NUMBER)

    refused(response, 401, "X-HubSpot-Request-Timestamp is not a number of milliseconds")


@pytest.mark.parametrize("system", ["kantata", "netsuite"])
def test_an_over_long_standard_webhooks_timestamp_is_a_401_not_an_overflow(connections, system):
    response = post_standard(system, ns_invoice_envelope(), timestamp=LONG_NUMBER)

    refused(response, 401, "webhook-timestamp is not a number of seconds")


def test_a_stripe_amount_of_1e400_is_a_400_naming_the_field(connections):
    body = json.dumps(stripe_event()).replace('"total": 150000', '"total": 1e400').encode()

    refused(post_stripe_body(body), 400, "data.object.total")


@pytest.mark.parametrize("amount", ["1500.5", "1e12", "-1e400", "10000000000000000"])
def test_a_stripe_amount_that_is_not_whole_minor_units_is_refused(connections, amount):
    body = json.dumps(stripe_event()).replace('"total": 150000', f'"total": {amount}').encode()

    refused(post_stripe_body(body), 400, "data.object.total")


@pytest.mark.parametrize("system", ["kantata", "netsuite"])
def test_an_event_id_longer_than_the_column_is_refused_not_cut(connections, system):
    long_id = "msg_" + "x" * 300

    event = refused(post_standard(system, ns_invoice_envelope(), msg_id=long_id), 400, "event id")
    assert "200" in event.reason


def test_a_hubspot_event_id_longer_than_the_column_is_refused(connections):
    body = json.dumps([deal_event(event_id=int("9" * 19))]).encode()  # 19 digits: a HubSpot id, and short enough
    assert post_hubspot_raw(body, str(int(time.time() * 1000))).status_code == 202
    InboundEvent.objects.all().delete()
    SyncRecord.objects.all().delete()
    body = json.dumps([deal_event(event_id="9" * 250)]).encode()

    refused(post_hubspot_raw(body, str(int(time.time() * 1000))), 400, "eventId")


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "yesterday",
                                  "2026-13-45T10:00:00Z", 1e400])
def test_a_value_that_is_no_time_where_a_time_is_expected_is_a_400(connections, when):
    envelope = ns_invoice_envelope(lastModifiedDate=when)
    envelope["timestamp"] = when
    body = json.dumps(envelope).encode() if when != 1e400 else \
        json.dumps(ns_invoice_envelope()).replace('"2026-11-20T10:00:00Z"', "1e400").encode()

    refused(post_standard("netsuite", body), 400, "lastModifiedDate")


def test_a_kantata_time_that_is_no_time_is_a_400(connections):
    envelope = {"type": "time_entry.approved", "timestamp": "0001-01-01T00:00:00+05:00", "data": {
        "id": 41, "workspace_id": 7, "date_performed": "2026-11-19", "time_in_minutes": 60, "approved": True,
        "updated_at": "0001-01-01T00:00:00+05:00"}}

    refused(post_standard("kantata", envelope), 400, "updated_at")


# ------------------------------------------------------------------ accepted when they should not be


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_a_bare_nan_or_infinity_amount_is_refused(connections, constant):
    body = json.dumps(ns_invoice_envelope()).replace('"total": "1500.00"', f'"total": {constant}').encode()

    refused(post_standard("netsuite", body), 400, f"{constant.lstrip('-')} is not a JSON number")


def test_a_json_body_with_a_key_twice_is_refused(connections):
    body = json.dumps(ns_invoice_envelope()).replace('"total": "1500.00"',
                                                     '"total": "1500.00", "total": "15.00"').encode()

    refused(post_standard("netsuite", body), 400, "'total' appears twice")


def test_a_hubspot_body_with_a_key_twice_is_refused(connections):
    body = json.dumps([deal_event(deal_id=5)]).replace('"objectId": 5', '"objectId": 5, "objectId": 6').encode()

    refused(post_hubspot_raw(body, str(int(time.time() * 1000))), 400, "'objectId' appears twice")


def test_numbers_are_read_from_the_json_text_never_through_float():
    data = exact_json('{"a": 0.1, "b": 1500.10, "c": 12345678901234567890.123456789, "d": 7, "e": 1e400}')
    assert data == {"a": Decimal("0.1"), "b": Decimal("1500.10"), "c": Decimal("12345678901234567890.123456789"),
                    "d": 7, "e": Decimal("1e400")}
    assert isinstance(data["d"], int)


def test_a_netsuite_amount_sent_as_a_json_number_keeps_its_exact_value(connections):
    body = json.dumps(ns_invoice_envelope()).replace('"total": "1500.00"', '"total": 1500.10').encode()

    assert post_standard("netsuite", body).status_code == 202
    assert InboundEvent.objects.get().payload["invoices"][0]["total"] == "1500.10"  # float would say 1500.1


def test_an_amount_with_more_decimals_than_the_currency_is_held_naming_the_field(connections):
    assert post_standard("netsuite", ns_invoice_envelope(total="1500.005")).status_code == 202
    payload = InboundEvent.objects.get().payload

    problems = invoice_payment_to_crm.validate(payload, source_kind="netsuite")

    assert [(p.reason, p.fields) for p in problems if p.fields == ["total"]] == [("payload_schema_invalid", ["total"])]
    assert "1500.005" in problems[0].message and "more decimals than USD" in problems[0].message


def test_a_jpy_amount_with_decimals_is_held_and_a_trailing_zero_is_not(connections):
    payload = {"invoices": [{"id": "1", "number": "J-1", "currency": "JPY", "total": "1500.5"}]}
    [problem] = [p for p in invoice_payment_to_crm.validate(payload, source_kind="netsuite") if p.fields == ["total"]]
    assert "more decimals than JPY has (0)" in problem.message
    payload["invoices"][0]["total"] = "1500.0"
    assert not [p for p in invoice_payment_to_crm.validate(payload, source_kind="netsuite") if p.fields == ["total"]]


def test_a_negative_payment_is_held_naming_the_field(connections):
    assert post_standard("netsuite", ns_payment_envelope("-18500.00")).status_code == 202
    payload = InboundEvent.objects.get().payload

    problems = invoice_payment_to_crm.validate(payload, source_kind="netsuite")

    assert [(p.reason, p.fields) for p in problems] == [("payload_schema_invalid", ["amount"])]
    assert "-18500.00" in problems[0].message and "negative" in problems[0].message


def test_an_opportunity_amount_with_more_decimals_than_its_currency_is_held(firm):
    payload = {"opportunity_name": "X", "amount": "348000.001", "currency": "USD", "legal_entity": "US01",
               "billing_terms": "NET30", "account": {"name": "Acme", "tax_id": "12-3456789", "id": "1"},
               "duplicate_resolution": "new"}

    problems = quote_to_project.validate(payload, source_kind="salesforce")

    assert [(p.reason, p.fields) for p in problems] == [("payload_schema_invalid", ["amount"])]
    payload["amount"] = "348000.00"
    assert quote_to_project.validate(payload, source_kind="salesforce") == []


# ------------------------------------------------------------------ signatures dated ahead of now


def test_a_stripe_signature_dated_ahead_beyond_the_tolerance_is_refused(connections):
    body = json.dumps(stripe_event()).encode()

    refused(post_stripe_body(body, t=int(time.time()) + 360), 401, "ahead of now")


def test_a_stripe_signature_within_the_tolerance_either_way_is_accepted(connections):
    assert post_stripe_body(json.dumps(stripe_event()).encode(), t=int(time.time()) + 240).status_code == 202


def test_a_hubspot_signature_dated_ahead_is_refused(connections):
    ts = str(int(time.time() * 1000) + 360_000)

    refused(post_hubspot_raw(json.dumps([deal_event()]).encode(), ts), 401, "ahead of now")


def test_a_standard_webhooks_signature_dated_ahead_is_refused(connections):
    refused(post_standard("netsuite", ns_invoice_envelope(), timestamp=int(time.time()) + 360), 401, "ahead of now")
