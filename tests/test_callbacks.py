"""The callback API, POST /api/v1/callbacks/<connection>/: HubSpot webhooks v3 and Salesforce Outbound Messages.

Every request either stores its events exactly once (verified) or is refused with a 4xx and stored as a
rejection the integration admin can read. Nothing refused ever becomes a sync record.
"""

from __future__ import annotations

import json
import random
import time

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from apps.connectors.hubspot.inbound import signature_v3
from apps.connectors.salesforce.inbound import build_outbound_message
from apps.demo.deals import make_opportunity
from apps.demo.firm import SALESFORCE_ORG
from apps.sync.intake import process_inbox
from apps.sync.models import Connection, InboundEvent, SyncRecord

from .conftest import HUBSPOT_SECRET, SALESFORCE_CALLBACK, salesforce_id

pytestmark = pytest.mark.django_db

HUBSPOT_PATH = "/api/v1/callbacks/hubspot/"
HUBSPOT_URI = "http://testserver" + HUBSPOT_PATH
SALESFORCE_PATH = SALESFORCE_CALLBACK


# ------------------------------------------------------------------ helpers


@pytest.fixture
def client():
    return APIClient()


def now_ms() -> str:
    return str(int(time.time() * 1000))


def deal_event(event_id=1001, deal_id=123, stage="closedwon", **overrides) -> dict:
    ev = {"eventId": event_id, "subscriptionId": 7, "portalId": 62515, "appId": 1,
          "occurredAt": int(time.time() * 1000), "subscriptionType": "deal.propertyChange", "attemptNumber": 0,
          "objectId": deal_id, "propertyName": "dealstage", "propertyValue": stage, "changeSource": "CRM"}
    ev.update(overrides)
    return ev


def post_hubspot(client, body, *, secret=HUBSPOT_SECRET, ts=None, sig=None, content_type="application/json",
                 uri=HUBSPOT_URI, path=HUBSPOT_PATH, headers=True):
    """POST a HubSpot webhook, signed (v3) over the exact bytes sent unless told otherwise."""
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    ts = now_ms() if ts is None else ts
    sig = signature_v3(secret, "POST", uri, body, ts) if sig is None else sig
    extra = {"HTTP_X_HUBSPOT_SIGNATURE_V3": sig, "HTTP_X_HUBSPOT_REQUEST_TIMESTAMP": ts} if headers else {}
    return client.post(path, data=body, content_type=content_type, **extra)


OPP_ID = salesforce_id("006SB0000000001")


def opportunity_fields(seed=1, opp_id=OPP_ID, **overrides) -> dict:
    opp = make_opportunity(random.Random(seed), "good")
    fields = opp.as_salesforce(opp_id, salesforce_id("001SB0000000001"))
    fields.update(overrides)
    return fields


def post_salesforce(client, body: bytes, content_type="text/xml; charset=utf-8", path=SALESFORCE_PATH):
    return client.post(path, data=body, content_type=content_type, HTTP_SOAPACTION='""')


def outbound(notifications, org_id=SALESFORCE_ORG, **kw) -> bytes:
    return build_outbound_message(org_id=org_id, notifications=notifications, **kw)


def assert_only_rejection(response, status: int, *, connection="hubspot", reason_contains: str = "") -> InboundEvent:
    """The request was refused with `status`, stored as exactly one rejection, and nothing else exists."""
    assert response.status_code == status, response.content
    event = InboundEvent.objects.get()
    assert event.status == InboundEvent.Status.REJECTED
    assert event.verified is False
    assert event.http_status == response.status_code
    assert event.reason.strip()
    if reason_contains:
        assert reason_contains.lower() in event.reason.lower(), event.reason
    if connection is None:
        assert event.connection is None
    else:
        assert event.connection.slug == connection
    # nothing but the rejection: no verified event, no payload for the inbox, no record even after processing
    assert not InboundEvent.objects.exclude(status=InboundEvent.Status.REJECTED).exists()
    assert event.payload == {} and event.workflow == "" and event.source_key == ""
    assert process_inbox()["records"] == 0
    assert SyncRecord.objects.count() == 0
    return event


def error_of(response) -> str:
    return json.loads(response.content)["error"]


# ------------------------------------------------------------------ HubSpot: accepted


def test_it_accepts_a_validly_signed_hubspot_webhook_and_stores_the_event_once(client, connections):
    response = post_hubspot(client, [deal_event(event_id=1001, deal_id=123)])

    assert response.status_code == 202, response.content
    assert json.loads(response.content) == {"accepted": 1, "duplicates": 0, "ignored": 0}
    event = InboundEvent.objects.get()
    assert event.status == InboundEvent.Status.RECEIVED
    assert event.verified is True
    assert event.http_status == 202
    assert event.connection == connections["hubspot"]
    assert event.event_id == "1001"
    assert event.event_type == "deal.propertyChange:dealstage"
    assert event.deliveries == 1
    assert event.workflow == "quote_to_project"
    assert event.source_key == "deal:123"
    assert {k: event.payload[k] for k in ("deal_id", "portal_id")} == {"deal_id": "123", "portal_id": 62515}
    assert event.payload["source_modified_at"].endswith("Z")  # occurredAt, for ordering
    assert event.headers["X-HubSpot-Signature-v3"]
    assert SyncRecord.objects.count() == 0  # records are made by the inbox job, not while the sender waits


def test_it_accepts_a_signature_made_over_the_public_url(client, connections, settings):
    settings.HANDOFF_PUBLIC_URL = "https://handoff.example.com"
    response = post_hubspot(client, [deal_event()], uri="https://handoff.example.com" + HUBSPOT_PATH)

    assert response.status_code == 202, response.content
    assert InboundEvent.objects.get().status == InboundEvent.Status.RECEIVED


def test_it_counts_a_redelivered_event_once_and_bumps_its_deliveries(client, connections):
    first = post_hubspot(client, [deal_event(event_id=5)])
    second = post_hubspot(client, [deal_event(event_id=5)])
    third = post_hubspot(client, [deal_event(event_id=5)])

    assert first.status_code == 202
    assert second.status_code == 200 and third.status_code == 200
    assert json.loads(second.content) == {"accepted": 0, "duplicates": 1, "ignored": 0}
    event = InboundEvent.objects.get()
    assert event.deliveries == 3
    assert event.status == InboundEvent.Status.RECEIVED
    assert event.http_status == 202


def test_it_counts_the_same_event_twice_in_one_request_once(client, connections):
    response = post_hubspot(client, [deal_event(event_id=77), deal_event(event_id=77), deal_event(event_id="77")])

    assert response.status_code == 202
    assert json.loads(response.content)["accepted"] == 1
    event = InboundEvent.objects.get()
    assert event.event_id == "77" and event.deliveries == 1


def test_it_stores_each_event_of_a_batch(client, connections):
    response = post_hubspot(client, [deal_event(event_id=i, deal_id=100 + i) for i in range(1, 6)])

    assert response.status_code == 202
    assert json.loads(response.content)["accepted"] == 5
    assert sorted(InboundEvent.objects.values_list("source_key", flat=True)) == [
        f"deal:{100 + i}" for i in range(1, 6)]
    assert set(InboundEvent.objects.values_list("status", flat=True)) == {"received"}


def test_it_records_an_unknown_subscription_type_as_ignored(client, connections):
    event = {"eventId": 9001, "subscriptionId": 8, "portalId": 62515, "occurredAt": int(time.time() * 1000),
             "subscriptionType": "contact.creation", "objectId": 55, "attemptNumber": 0}
    response = post_hubspot(client, [event])

    assert response.status_code == 200, response.content
    assert json.loads(response.content) == {"accepted": 0, "duplicates": 0, "ignored": 1}
    stored = InboundEvent.objects.get()
    assert stored.status == InboundEvent.Status.IGNORED
    assert stored.verified is True
    assert stored.http_status == 200  # the status it was answered with
    assert "contact.creation" in stored.reason
    assert stored.workflow == "" and stored.payload == {}
    assert process_inbox()["records"] == 0
    assert SyncRecord.objects.count() == 0


def test_it_records_a_deal_stage_that_is_not_closed_won_as_ignored(client, connections):
    response = post_hubspot(client, [deal_event(event_id=9002, stage="appointmentscheduled")])

    assert response.status_code == 200
    stored = InboundEvent.objects.get()
    assert stored.status == InboundEvent.Status.IGNORED
    assert stored.verified is True
    assert "appointmentscheduled" in stored.reason and "closed-won" in stored.reason
    process_inbox()
    assert SyncRecord.objects.count() == 0


def test_a_mixed_batch_accepts_the_closed_won_deal_and_ignores_the_rest(client, connections):
    response = post_hubspot(client, [deal_event(event_id=1, deal_id=10),
                                     deal_event(event_id=2, deal_id=11, stage="qualifiedtobuy"),
                                     {"eventId": 3, "subscriptionType": "company.creation", "objectId": 4}])

    assert response.status_code == 202
    assert json.loads(response.content) == {"accepted": 1, "duplicates": 0, "ignored": 2}
    assert dict(InboundEvent.objects.values_list("event_id", "status")) == {
        "1": "received", "2": "ignored", "3": "ignored"}


def test_a_redelivered_ignored_event_is_not_stored_twice(client, connections):
    post_hubspot(client, [deal_event(event_id=31, stage="closedlost")])
    response = post_hubspot(client, [deal_event(event_id=31, stage="closedlost")])

    assert response.status_code == 200
    assert json.loads(response.content)["duplicates"] == 1
    stored = InboundEvent.objects.get()
    assert stored.status == InboundEvent.Status.IGNORED and stored.deliveries == 2


def test_it_stores_script_and_html_in_text_fields_verbatim(client, connections):
    # a text field (ids are checked against their format: tests/security/test_external_ids.py)
    nasty = '<script>alert("x")</script><img src=x onerror=alert(1)>&amp;'
    response = post_hubspot(client, [deal_event(event_id=4040, deal_id=123, stage=nasty)])

    assert response.status_code == 200
    stored = InboundEvent.objects.get()
    assert stored.status == InboundEvent.Status.IGNORED
    assert nasty in stored.reason
    assert json.loads(stored.raw_body)["propertyValue"] == nasty


# ------------------------------------------------------------------ HubSpot: refused


def test_it_rejects_a_bad_signature(client, connections):
    body = json.dumps([deal_event()]).encode()
    response = post_hubspot(client, body, sig=signature_v3("not-the-secret", "POST", HUBSPOT_URI, body, now_ms()))

    event = assert_only_rejection(response, 401, reason_contains="signature")
    assert "signature" in error_of(response)
    assert json.loads(event.raw_body)[0]["eventId"] == 1001  # the admin can see what was refused


def test_it_rejects_a_signature_over_a_different_body(client, connections):
    ts = now_ms()
    signed = json.dumps([deal_event(deal_id=1)]).encode()
    sent = json.dumps([deal_event(deal_id=2)]).encode()
    response = post_hubspot(client, sent, ts=ts, sig=signature_v3(HUBSPOT_SECRET, "POST", HUBSPOT_URI, signed, ts))

    assert_only_rejection(response, 401, reason_contains="bad signature")


def test_it_rejects_a_signature_made_for_another_url(client, connections):
    response = post_hubspot(client, [deal_event()], uri="http://testserver/api/v1/callbacks/other/")

    assert_only_rejection(response, 401, reason_contains="bad signature")


def test_it_rejects_a_signature_with_a_different_timestamp(client, connections):
    body = json.dumps([deal_event()]).encode()
    signed_at = str(int(time.time() * 1000) - 10_000)
    response = post_hubspot(client, body, ts=now_ms(),
                            sig=signature_v3(HUBSPOT_SECRET, "POST", HUBSPOT_URI, body, signed_at))

    assert_only_rejection(response, 401, reason_contains="bad signature")


@pytest.mark.parametrize("missing", ["HTTP_X_HUBSPOT_SIGNATURE_V3", "HTTP_X_HUBSPOT_REQUEST_TIMESTAMP", "both"])
def test_it_rejects_a_webhook_without_its_signature_headers(client, connections, missing):
    body = json.dumps([deal_event()]).encode()
    ts = now_ms()
    headers = {"HTTP_X_HUBSPOT_SIGNATURE_V3": signature_v3(HUBSPOT_SECRET, "POST", HUBSPOT_URI, body, ts),
               "HTTP_X_HUBSPOT_REQUEST_TIMESTAMP": ts}
    if missing == "both":
        headers = {}
    else:
        del headers[missing]
    response = client.post(HUBSPOT_PATH, data=body, content_type="application/json", **headers)

    assert_only_rejection(response, 401, reason_contains="missing")


@pytest.mark.parametrize("ts", ["not-a-number", "1.7e12", ""])
def test_it_rejects_a_timestamp_that_is_not_milliseconds(client, connections, ts):
    body = json.dumps([deal_event()]).encode()
    response = post_hubspot(client, body, ts=ts, sig=signature_v3(HUBSPOT_SECRET, "POST", HUBSPOT_URI, body, ts))

    assert_only_rejection(response, 401)


def test_it_rejects_a_stale_timestamp(client, connections):
    six_minutes_ago = str(int(time.time() * 1000) - 6 * 60 * 1000)
    response = post_hubspot(client, [deal_event()], ts=six_minutes_ago)  # correctly signed, but too old

    assert_only_rejection(response, 401, reason_contains="stale")
    assert "stale" in error_of(response)


def test_it_rejects_a_timestamp_from_the_future(client, connections):
    in_ten_minutes = str(int(time.time() * 1000) + 10 * 60 * 1000)
    response = post_hubspot(client, [deal_event()], ts=in_ten_minutes)

    assert_only_rejection(response, 401, reason_contains="stale")


def test_it_accepts_a_timestamp_just_inside_the_window(client, connections):
    four_minutes_ago = str(int(time.time() * 1000) - 4 * 60 * 1000)
    response = post_hubspot(client, [deal_event()], ts=four_minutes_ago)

    assert response.status_code == 202
    assert InboundEvent.objects.get().status == InboundEvent.Status.RECEIVED


def test_it_rejects_a_replayed_old_request(client, connections):
    """An attacker who captured a genuine request replays it, byte for byte, after the window has passed."""
    body = json.dumps([deal_event(event_id=4242)]).encode()
    old_ts = str(int(time.time() * 1000) - 60 * 60 * 1000)
    captured_sig = signature_v3(HUBSPOT_SECRET, "POST", HUBSPOT_URI, body, old_ts)

    response = post_hubspot(client, body, ts=old_ts, sig=captured_sig)

    assert_only_rejection(response, 401, reason_contains="stale")


def test_a_replay_inside_the_window_is_only_a_redelivery(client, connections):
    body = json.dumps([deal_event(event_id=4343)]).encode()
    ts = now_ms()
    sig = signature_v3(HUBSPOT_SECRET, "POST", HUBSPOT_URI, body, ts)

    assert post_hubspot(client, body, ts=ts, sig=sig).status_code == 202
    assert post_hubspot(client, body, ts=ts, sig=sig).status_code == 200

    assert InboundEvent.objects.get().deliveries == 2
    process_inbox()
    assert SyncRecord.objects.count() == 1


def test_it_rejects_a_non_ascii_signature_header(client, connections):
    response = post_hubspot(client, [deal_event()], sig="sïgnature-é")

    assert_only_rejection(response, 401, reason_contains="signature")


def test_it_rejects_when_the_connection_has_no_client_secret(client, connections):
    Connection.objects.filter(slug="hubspot").update(inbound_secret="")
    response = post_hubspot(client, [deal_event()], secret="")

    assert_only_rejection(response, 401, reason_contains="secret")


def test_it_rejects_malformed_json(client, connections):
    response = post_hubspot(client, b'[{"eventId": 1, "subscriptionType": ')

    event = assert_only_rejection(response, 400, reason_contains="malformed JSON")
    assert event.raw_body == '[{"eventId": 1, "subscriptionType": '


@pytest.mark.parametrize("body", [
    {"eventId": 1, "subscriptionType": "deal.propertyChange"},
    [],
    "a string",
    42,
    None,
])
def test_it_rejects_a_body_that_is_not_a_non_empty_json_array(client, connections, body):
    response = post_hubspot(client, body)

    assert_only_rejection(response, 400, reason_contains="JSON array")


@pytest.mark.parametrize("event", [
    {"subscriptionType": "deal.propertyChange"},
    {"eventId": 1},
    "not an object",
    {"eventId": None, "subscriptionType": "deal.propertyChange"},
    {"eventId": "   ", "subscriptionType": "deal.propertyChange"},
    {"eventId": 1, "subscriptionType": "deal.propertyChange", "propertyName": "dealstage",
     "propertyValue": "closedwon"},  # closed-won without objectId
])
def test_it_rejects_an_event_without_the_fields_it_needs(client, connections, event):
    response = post_hubspot(client, [deal_event(event_id=1), event])

    assert_only_rejection(response, 400, reason_contains="event 1")


def test_it_rejects_more_than_100_events(client, connections):
    response = post_hubspot(client, [deal_event(event_id=i) for i in range(101)])

    assert_only_rejection(response, 400, reason_contains="100")


def test_it_rejects_invalid_utf8(client, connections):
    body = b'[{"eventId": 1, "subscriptionType": "deal.propertyChange", "x": "\xff\xfe"}]'
    response = post_hubspot(client, body)

    event = assert_only_rejection(response, 400, reason_contains="UTF-8")
    assert "\ufffd" in event.raw_body  # kept readable for the admin


@pytest.mark.parametrize("body", [b"[" * 100_000, b"[" * 100_000 + b"]" * 100_000,
                                  b'[{"eventId": 1, "subscriptionType": "x", "d": ' + b"{\"a\":" * 50_000 + b"1"
                                  + b"}" * 50_000 + b"}]"])
def test_it_refuses_deeply_nested_json_without_crashing(client, connections, body):
    response = post_hubspot(client, body)

    assert 400 <= response.status_code < 500
    assert_only_rejection(response, response.status_code)


def test_it_stores_moderately_nested_json_without_crashing(client, connections):
    nested = {"eventId": 1, "subscriptionType": "deal.creation", "d": json.loads("[" * 800 + "]" * 800)}
    response = post_hubspot(client, [nested])

    assert response.status_code == 200, response.content
    stored = InboundEvent.objects.get()
    assert stored.status == InboundEvent.Status.IGNORED and stored.verified is True
    assert json.loads(stored.raw_body)["d"] == nested["d"]


def test_it_stores_a_nul_character_in_text_without_crashing(client, connections):
    events = [deal_event(event_id=10, deal_id=123),
              {"eventId": 2, "subscriptionType": "contact.\u0000creation", "note": "a\u0000b"}]
    response = post_hubspot(client, events)

    assert response.status_code == 202, response.content
    assert json.loads(response.content) == {"accepted": 1, "duplicates": 0, "ignored": 1}
    # PostgreSQL cannot store NUL: it becomes U+FFFD (not dropped, so a<NUL>b is not mistaken for ab)
    other = InboundEvent.objects.get(status="ignored")
    assert other.event_type == "contact.\ufffdcreation"
    assert json.loads(other.raw_body)["note"] == "a\ufffdb"


def test_an_id_with_a_nul_character_is_refused_not_cut(client, connections):
    # no HubSpot id holds a NUL: deal 12<NUL>3 is refused, never stored as (or mistaken for) deal 123
    response = post_hubspot(client, [deal_event(event_id=10, deal_id="12\u00003")])

    event = assert_only_rejection(response, 400, reason_contains="objectId")
    assert json.loads(event.raw_body)[0]["objectId"] == "12\u00003"  # the body kept as sent (an escape, no NUL)


def test_it_rejects_a_connection_name_with_a_nul_character(client, connections):
    response = client.post("/api/v1/callbacks/hub%00spot/", data=b"[]", content_type="application/json")

    event = assert_only_rejection(response, 404, connection=None)
    assert event.connection_slug == "hub\ufffdspot"


@override_settings(HANDOFF_MAX_CALLBACK_BYTES=2048)
def test_it_rejects_an_oversize_body_for_a_connection_name_with_a_nul_character(client, connections):
    response = client.post("/api/v1/callbacks/hub%00spot/", data=b"x" * 5000, content_type="application/json")

    assert_only_rejection(response, 404, connection=None)


def test_it_keeps_a_header_with_a_nul_character_readable(client, connections):
    body = json.dumps([deal_event()]).encode()
    ts = now_ms()
    response = client.post(HUBSPOT_PATH, data=body, content_type="application/json", HTTP_USER_AGENT="bot\x00/1",
                           HTTP_X_HUBSPOT_SIGNATURE_V3=signature_v3(HUBSPOT_SECRET, "POST", HUBSPOT_URI, body, ts),
                           HTTP_X_HUBSPOT_REQUEST_TIMESTAMP=ts)

    assert response.status_code == 202
    assert InboundEvent.objects.get().headers["User-Agent"] == "bot\ufffd/1"


def test_a_rejection_keeps_a_header_with_a_nul_character_readable(client, connections):
    response = client.post(HUBSPOT_PATH, data=b"[]", content_type="application/json", HTTP_USER_AGENT="bot\x00/1")

    assert assert_only_rejection(response, 401).headers["User-Agent"] == "bot\ufffd/1"


def test_a_literal_backslash_u0000_in_text_is_stored_intact(client, connections):
    text = "C:\\u0000\\path"  # the six characters \u0000, not a NUL
    response = post_hubspot(client, [{"eventId": 11, "subscriptionType": "contact.creation", "note": text}])

    assert response.status_code == 200, response.content
    stored = InboundEvent.objects.get()
    assert json.loads(stored.raw_body)["note"] == text
    assert stored.status == InboundEvent.Status.IGNORED


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "text/xml",
                                          "application/jsonx"])
def test_it_rejects_a_webhook_with_the_wrong_content_type(client, connections, content_type):
    response = post_hubspot(client, [deal_event()], content_type=content_type)

    assert_only_rejection(response, 415, reason_contains="application/json")


def test_it_accepts_json_with_a_charset_parameter(client, connections):
    response = post_hubspot(client, [deal_event()], content_type="application/json; charset=utf-8")

    assert response.status_code == 202
    assert InboundEvent.objects.get().status == InboundEvent.Status.RECEIVED


def test_an_unsigned_request_is_refused_before_its_content_type_is_checked(client, connections):
    response = post_hubspot(client, b"hello", content_type="text/plain", headers=False)

    assert_only_rejection(response, 401)


@override_settings(HANDOFF_MAX_CALLBACK_BYTES=2048)
def test_it_rejects_an_oversize_body(client, connections):
    events = [deal_event(event_id=i, deal_id=i) for i in range(40)]
    body = json.dumps(events).encode()
    assert len(body) > 2048
    response = post_hubspot(client, body)

    event = assert_only_rejection(response, 413, reason_contains="limit")
    assert "2048" in event.reason
    assert len(event.raw_body) <= 65_536


@override_settings(HANDOFF_MAX_CALLBACK_BYTES=2048)
def test_a_body_at_the_size_limit_is_accepted(client, connections):
    event = deal_event(event_id=1)
    event["pad"] = ""
    base = len(json.dumps([event]).encode())
    event["pad"] = "x" * (2048 - base)
    body = json.dumps([event]).encode()
    assert len(body) == 2048
    response = post_hubspot(client, body)

    assert response.status_code == 202
    assert InboundEvent.objects.get().status == InboundEvent.Status.RECEIVED


@override_settings(HANDOFF_MAX_CALLBACK_BYTES=2048)
def test_it_rejects_an_oversize_body_for_an_unknown_connection_as_unknown(client, connections):
    response = client.post("/api/v1/callbacks/nope/", data=b"x" * 5000, content_type="application/json")

    assert_only_rejection(response, 404, connection=None)


def test_it_rejects_an_unknown_connection(client, connections):
    response = post_hubspot(client, [deal_event()], path="/api/v1/callbacks/pipedrive/",
                            uri="http://testserver/api/v1/callbacks/pipedrive/")

    event = assert_only_rejection(response, 404, connection=None)
    assert event.connection_slug == "pipedrive"
    assert "pipedrive" in error_of(response)


def test_it_rejects_an_unknown_connection_with_a_very_long_name(client, connections):
    slug = "x" * 300
    response = client.post(f"/api/v1/callbacks/{slug}/", data=b"[]", content_type="application/json")

    event = assert_only_rejection(response, 404, connection=None)
    assert event.connection_slug == "x" * 50


def test_it_rejects_a_callback_to_a_connection_that_receives_none(client, connections):
    response = post_hubspot(client, [deal_event()], path="/api/v1/callbacks/anaplan/",
                            uri="http://testserver/api/v1/callbacks/anaplan/")

    assert_only_rejection(response, 404, connection="anaplan", reason_contains="does not receive callbacks")


def test_it_rejects_a_callback_to_a_disabled_connection(client, connections):
    Connection.objects.filter(slug="hubspot").update(enabled=False)
    response = post_hubspot(client, [deal_event()])

    assert_only_rejection(response, 403, reason_contains="disabled")


def test_it_answers_only_post(client, connections):
    response = client.get(HUBSPOT_PATH)

    assert response.status_code == 405
    assert InboundEvent.objects.count() == 0


def test_a_refused_request_does_not_block_a_later_valid_one(client, connections):
    post_hubspot(client, [deal_event(event_id=66)], sig="forged")
    response = post_hubspot(client, [deal_event(event_id=66)])

    assert response.status_code == 202
    assert dict(InboundEvent.objects.values_list("status", "verified")) == {"rejected": False, "received": True}


# ------------------------------------------------------------------ Salesforce


def test_it_acks_a_salesforce_outbound_message_and_stores_the_opportunity(client, connections):
    fields = opportunity_fields(seed=1, opp_id=OPP_ID)
    response = post_salesforce(client, outbound([("04l000000000001AAA", fields)]))

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


def test_it_accepts_an_18_character_org_id_matching_on_its_15_character_prefix(client, connections):
    org15 = SALESFORCE_ORG[:15]
    response = post_salesforce(client, outbound([("04l1", opportunity_fields())], org_id=org15 + "ZZZ"))

    assert response.status_code == 200 and b"<Ack>true</Ack>" in response.content
    assert InboundEvent.objects.get().status == InboundEvent.Status.RECEIVED


def test_it_rejects_an_outbound_message_from_another_org(client, connections):
    response = post_salesforce(client, outbound([("04l1", opportunity_fields())], org_id="00D000000000001AAA"))

    assert_only_rejection(response, 401, connection="salesforce", reason_contains="OrganizationId")
    assert response["Content-Type"].startswith("text/xml")
    assert b"<soapenv:Fault>" in response.content and b"<faultstring>" in response.content
    assert b"<Ack>" not in response.content


def test_it_rejects_an_org_id_that_differs_only_in_case(client, connections):
    response = post_salesforce(client, outbound([("04l1", opportunity_fields())],
                                                org_id=SALESFORCE_ORG[:15].lower() + SALESFORCE_ORG[15:]))

    assert_only_rejection(response, 401, connection="salesforce")


def test_it_rejects_an_outbound_message_without_an_org_id(client, connections):
    response = post_salesforce(client, outbound([("04l1", opportunity_fields())], org_id=""))

    assert_only_rejection(response, 401, connection="salesforce", reason_contains="missing")
    assert b"soapenv:Fault" in response.content


def test_it_rejects_malformed_xml(client, connections):
    body = outbound([("04l1", opportunity_fields())])[:-30]
    response = post_salesforce(client, body)

    assert_only_rejection(response, 400, connection="salesforce", reason_contains="malformed XML")
    assert b"soapenv:Fault" in response.content


def test_it_rejects_xml_that_is_not_an_outbound_message(client, connections):
    response = post_salesforce(client, b"<?xml version='1.0'?><hello>world</hello>")

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
def test_it_refuses_xml_with_a_dtd_or_entities(client, connections, body):
    response = post_salesforce(client, body)

    event = assert_only_rejection(response, 400, connection="salesforce", reason_contains="DTD")
    assert "lollol" not in event.raw_body and "root:" not in event.raw_body
    assert b"soapenv:Fault" in response.content


def test_it_acks_a_non_opportunity_sobject_and_stores_it_as_ignored(client, connections):
    body = outbound([("04lACC1", {"Id": salesforce_id("001SB0000000009"), "Name": "Acme"})], sobject_type="Account")
    response = post_salesforce(client, body)

    assert response.status_code == 200 and b"<Ack>true</Ack>" in response.content
    event = InboundEvent.objects.get()
    assert event.status == InboundEvent.Status.IGNORED
    assert event.verified is True
    assert "Account" in event.reason
    assert event.event_type == "outbound_message:Account"
    process_inbox()
    assert SyncRecord.objects.count() == 0


def test_it_acks_an_opportunity_that_is_not_won_and_stores_it_as_ignored(client, connections):
    fields = opportunity_fields(StageName="Negotiation", IsWon="false")
    response = post_salesforce(client, outbound([("04lNEG1", fields)]))

    assert response.status_code == 200 and b"<Ack>true</Ack>" in response.content
    event = InboundEvent.objects.get()
    assert event.status == InboundEvent.Status.IGNORED
    assert "Negotiation" in event.reason
    process_inbox()
    assert SyncRecord.objects.count() == 0


def test_it_acks_a_redelivered_outbound_message_and_counts_it_once(client, connections):
    body = outbound([("04lRE1", opportunity_fields())])
    responses = [post_salesforce(client, body) for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert all(b"<Ack>true</Ack>" in r.content for r in responses)
    event = InboundEvent.objects.get()
    assert event.deliveries == 3
    assert event.status == InboundEvent.Status.RECEIVED


def test_it_stores_each_notification_of_a_message(client, connections):
    a, b = salesforce_id("006A"), salesforce_id("006B")
    body = outbound([("04lA", opportunity_fields(seed=1, opp_id=a)),
                     ("04lB", opportunity_fields(seed=2, opp_id=b)),
                     ("04lA", opportunity_fields(seed=1, opp_id=a))])
    response = post_salesforce(client, body)

    assert response.status_code == 200
    assert sorted(InboundEvent.objects.values_list("source_key", flat=True)) == [
        f"opportunity:{a}", f"opportunity:{b}"]


def test_it_rejects_a_notification_without_an_id(client, connections):
    response = post_salesforce(client, outbound([("", opportunity_fields())]))

    assert_only_rejection(response, 400, connection="salesforce", reason_contains="<Id>")


def test_it_rejects_a_won_opportunity_without_an_id(client, connections):
    fields = opportunity_fields()
    del fields["Id"]
    response = post_salesforce(client, outbound([("04l1", fields)]))

    assert_only_rejection(response, 400, connection="salesforce", reason_contains="no Id")


def test_it_rejects_an_outbound_message_with_no_notification(client, connections):
    response = post_salesforce(client, outbound([]))

    assert_only_rejection(response, 400, connection="salesforce", reason_contains="no <Notification>")


def test_it_rejects_an_outbound_message_with_the_wrong_content_type(client, connections):
    response = post_salesforce(client, outbound([("04l1", opportunity_fields())]), content_type="application/json")

    assert_only_rejection(response, 415, connection="salesforce", reason_contains="text/xml")
    assert b"soapenv:Fault" in response.content


def test_it_rejects_an_outbound_message_to_a_disabled_connection(client, connections):
    Connection.objects.filter(slug="salesforce").update(enabled=False)
    response = post_salesforce(client, outbound([("04l1", opportunity_fields())]))

    assert_only_rejection(response, 403, connection="salesforce", reason_contains="disabled")
    assert b"soapenv:Fault" in response.content


@override_settings(HANDOFF_MAX_CALLBACK_BYTES=2048)
def test_it_rejects_an_oversize_outbound_message(client, connections):
    body = outbound([(f"04l{i}", opportunity_fields(seed=i, opp_id=salesforce_id(f"006{i}"))) for i in range(5)])
    assert len(body) > 2048
    response = post_salesforce(client, body)

    assert_only_rejection(response, 413, connection="salesforce")
    assert b"soapenv:Fault" in response.content


def test_it_stores_script_and_html_in_salesforce_fields_verbatim(client, connections):
    nasty = '<script>alert("pwned")</script> & <b onmouseover="x()">Bold</b>'
    fields = opportunity_fields(Name=nasty, Account_Name__c=nasty, Legal_Entity__c="<i>US01</i>")
    response = post_salesforce(client, outbound([("04lXSS", fields)]))

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


def test_a_rejected_body_with_markup_is_stored_verbatim(client, connections):
    body = b"<script>alert(1)</script>"
    response = post_salesforce(client, body)

    event = assert_only_rejection(response, 400, connection="salesforce")
    assert event.raw_body == "<script>alert(1)</script>"


def test_a_soap_fault_escapes_the_reason(client, connections):
    response = post_salesforce(client, b"<a><b></a>")

    assert response.status_code == 400
    fault = response.content.decode()
    assert fault.count("<faultstring>") == 1
    from defusedxml.ElementTree import fromstring

    fromstring(response.content)  # the fault itself is well-formed XML


# ------------------------------------------------------------------ the inbox job


def test_processing_the_inbox_creates_one_record_per_deal(client, connections):
    post_hubspot(client, [deal_event(event_id=1, deal_id=500)])
    post_hubspot(client, [deal_event(event_id=2, deal_id=500)])  # a second closed-won event for the same deal
    post_hubspot(client, [deal_event(event_id=3, deal_id=501)])
    assert InboundEvent.objects.filter(status="received").count() == 3

    counts = process_inbox()

    assert counts["events"] == 3 and counts["records"] == 2
    assert sorted(SyncRecord.objects.values_list("source_key", flat=True)) == ["deal:500", "deal:501"]
    record = SyncRecord.objects.get(source_key="deal:500")
    assert record.workflow == "quote_to_project"
    assert record.status == SyncRecord.Status.PENDING
    assert record.source_connection == connections["hubspot"]
    assert {k: record.original_payload[k] for k in ("deal_id", "portal_id")} == {"deal_id": "500",
                                                                                  "portal_id": 62515}
    assert set(record.events.values_list("event_id", flat=True)) == {"1", "2"}
    assert set(InboundEvent.objects.values_list("status", flat=True)) == {"processed"}
    assert not InboundEvent.objects.filter(record__isnull=True).exists()


def test_processing_the_inbox_twice_creates_nothing_new(client, connections):
    post_hubspot(client, [deal_event(event_id=1, deal_id=600)])
    process_inbox()
    post_hubspot(client, [deal_event(event_id=1, deal_id=600)])  # redelivered after processing
    post_hubspot(client, [deal_event(event_id=9, deal_id=600)])  # a new event for the same deal

    counts = process_inbox()

    assert counts["events"] == 1 and counts["records"] == 0  # "records" counts new records: it joined the old one
    record = SyncRecord.objects.get()
    assert InboundEvent.objects.get(event_id="1").deliveries == 2
    assert set(record.events.values_list("event_id", flat=True)) == {"1", "9"}
    assert process_inbox()["events"] == 0
    assert SyncRecord.objects.count() == 1


def test_processing_the_inbox_makes_one_record_per_salesforce_opportunity(client, connections):
    same = salesforce_id("006SAME")
    fields = opportunity_fields(opp_id=same)
    post_salesforce(client, outbound([("04lX1", fields)]))
    post_salesforce(client, outbound([("04lX2", fields), ("04lX1", fields)]))

    process_inbox()

    record = SyncRecord.objects.get()
    assert record.source_key == f"opportunity:{same}"
    assert record.source_connection == connections["salesforce"]
    assert record.current_payload["opportunity_id"] == same
    assert InboundEvent.objects.get(event_id="04lX1").deliveries == 2
    assert record.events.count() == 2


def test_the_same_object_id_from_two_crms_makes_two_records(client, connections):
    both = "123456789012345"  # a HubSpot object id, and a (15-character) Salesforce id
    post_hubspot(client, [deal_event(event_id=1, deal_id=both)])
    post_salesforce(client, outbound([("04l1", opportunity_fields(opp_id=both))]))

    process_inbox()

    assert sorted(SyncRecord.objects.values_list("source_connection__slug", "source_key")) == [
        ("hubspot", f"deal:{both}"), ("salesforce", f"opportunity:{both}")]


def test_processing_the_inbox_leaves_ignored_and_rejected_events_alone(client, connections):
    post_hubspot(client, [deal_event(event_id=1, stage="closedlost")])
    post_hubspot(client, [deal_event(event_id=2)], sig="forged")

    assert process_inbox()["events"] == 0

    assert SyncRecord.objects.count() == 0
    assert dict(InboundEvent.objects.values_list("status", "record")) == {"ignored": None, "rejected": None}
