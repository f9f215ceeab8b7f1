"""HubSpot webhooks v3 at POST /api/v1/callbacks/hubspot/: what is accepted (stored exactly once, redeliveries
counted, events it does not act on stored as ignored) and how the signature and its timestamp are checked — a
request that fails them is refused with 401 and stored as a rejection the integration admin can read."""

from __future__ import annotations

import json
import time

import pytest

from apps.connectors.hubspot.inbound import signature_v3
from apps.sync.intake import process_inbox
from apps.sync.models import Connection, InboundEvent, SyncRecord

from tests.callbacks import (HUBSPOT_PATH, HUBSPOT_SECRET, HUBSPOT_URI, assert_only_rejection, deal_event, error_of,
                             now_ms, post_hubspot)

pytestmark = pytest.mark.django_db


# ------------------------------------------------------------------ HubSpot: accepted


def test_it_accepts_a_validly_signed_hubspot_webhook_and_stores_the_event_once(api, connections):
    response = post_hubspot(api, [deal_event(event_id=1001, deal_id=123)])

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


def test_it_accepts_a_signature_made_over_the_public_url(api, connections, settings):
    settings.HANDOFF_PUBLIC_URL = "https://handoff.example.com"
    response = post_hubspot(api, [deal_event()], uri="https://handoff.example.com" + HUBSPOT_PATH)

    assert response.status_code == 202, response.content
    assert InboundEvent.objects.get().status == InboundEvent.Status.RECEIVED


def test_it_counts_a_redelivered_event_once_and_bumps_its_deliveries(api, connections):
    first = post_hubspot(api, [deal_event(event_id=5)])
    second = post_hubspot(api, [deal_event(event_id=5)])
    third = post_hubspot(api, [deal_event(event_id=5)])

    assert first.status_code == 202
    assert second.status_code == 200 and third.status_code == 200
    assert json.loads(second.content) == {"accepted": 0, "duplicates": 1, "ignored": 0}
    event = InboundEvent.objects.get()
    assert event.deliveries == 3
    assert event.status == InboundEvent.Status.RECEIVED
    assert event.http_status == 202


def test_it_counts_the_same_event_twice_in_one_request_once(api, connections):
    response = post_hubspot(api, [deal_event(event_id=77), deal_event(event_id=77), deal_event(event_id="77")])

    assert response.status_code == 202
    assert json.loads(response.content)["accepted"] == 1
    event = InboundEvent.objects.get()
    assert event.event_id == "77" and event.deliveries == 1


def test_it_stores_each_event_of_a_batch(api, connections):
    response = post_hubspot(api, [deal_event(event_id=i, deal_id=100 + i) for i in range(1, 6)])

    assert response.status_code == 202
    assert json.loads(response.content)["accepted"] == 5
    assert sorted(InboundEvent.objects.values_list("source_key", flat=True)) == [
        f"deal:{100 + i}" for i in range(1, 6)]
    assert set(InboundEvent.objects.values_list("status", flat=True)) == {"received"}


def test_it_records_an_unknown_subscription_type_as_ignored(api, connections):
    event = {"eventId": 9001, "subscriptionId": 8, "portalId": 62515, "occurredAt": int(time.time() * 1000),
             "subscriptionType": "contact.creation", "objectId": 55, "attemptNumber": 0}
    response = post_hubspot(api, [event])

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


def test_it_records_a_deal_stage_that_is_not_closed_won_as_ignored(api, connections):
    response = post_hubspot(api, [deal_event(event_id=9002, stage="appointmentscheduled")])

    assert response.status_code == 200
    stored = InboundEvent.objects.get()
    assert stored.status == InboundEvent.Status.IGNORED
    assert stored.verified is True
    assert "appointmentscheduled" in stored.reason and "closed-won" in stored.reason
    process_inbox()
    assert SyncRecord.objects.count() == 0


def test_a_mixed_batch_accepts_the_closed_won_deal_and_ignores_the_rest(api, connections):
    response = post_hubspot(api, [deal_event(event_id=1, deal_id=10),
                                  deal_event(event_id=2, deal_id=11, stage="qualifiedtobuy"),
                                  {"eventId": 3, "subscriptionType": "company.creation", "objectId": 4}])

    assert response.status_code == 202
    assert json.loads(response.content) == {"accepted": 1, "duplicates": 0, "ignored": 2}
    assert dict(InboundEvent.objects.values_list("event_id", "status")) == {
        "1": "received", "2": "ignored", "3": "ignored"}


def test_a_redelivered_ignored_event_is_not_stored_twice(api, connections):
    post_hubspot(api, [deal_event(event_id=31, stage="closedlost")])
    response = post_hubspot(api, [deal_event(event_id=31, stage="closedlost")])

    assert response.status_code == 200
    assert json.loads(response.content)["duplicates"] == 1
    stored = InboundEvent.objects.get()
    assert stored.status == InboundEvent.Status.IGNORED and stored.deliveries == 2


def test_it_stores_script_and_html_in_text_fields_verbatim(api, connections):
    # a text field (ids are checked against their format: tests/security/test_external_ids.py)
    nasty = '<script>alert("x")</script><img src=x onerror=alert(1)>&amp;'
    response = post_hubspot(api, [deal_event(event_id=4040, deal_id=123, stage=nasty)])

    assert response.status_code == 200
    stored = InboundEvent.objects.get()
    assert stored.status == InboundEvent.Status.IGNORED
    assert nasty in stored.reason
    assert json.loads(stored.raw_body)["propertyValue"] == nasty


# ------------------------------------------------------------------ HubSpot: refused


def test_it_rejects_a_bad_signature(api, connections):
    body = json.dumps([deal_event()]).encode()
    response = post_hubspot(api, body, sig=signature_v3("not-the-secret", "POST", HUBSPOT_URI, body, now_ms()))

    event = assert_only_rejection(response, 401, reason_contains="signature")
    assert "signature" in error_of(response)
    assert json.loads(event.raw_body)[0]["eventId"] == 1001  # the admin can see what was refused


def test_it_rejects_a_signature_over_a_different_body(api, connections):
    ts = now_ms()
    signed = json.dumps([deal_event(deal_id=1)]).encode()
    sent = json.dumps([deal_event(deal_id=2)]).encode()
    response = post_hubspot(api, sent, ts=ts, sig=signature_v3(HUBSPOT_SECRET, "POST", HUBSPOT_URI, signed, ts))

    assert_only_rejection(response, 401, reason_contains="bad signature")


def test_it_rejects_a_signature_made_for_another_url(api, connections):
    response = post_hubspot(api, [deal_event()], uri="http://testserver/api/v1/callbacks/other/")

    assert_only_rejection(response, 401, reason_contains="bad signature")


def test_it_rejects_a_signature_with_a_different_timestamp(api, connections):
    body = json.dumps([deal_event()]).encode()
    signed_at = str(int(time.time() * 1000) - 10_000)
    response = post_hubspot(api, body, ts=now_ms(),
                            sig=signature_v3(HUBSPOT_SECRET, "POST", HUBSPOT_URI, body, signed_at))

    assert_only_rejection(response, 401, reason_contains="bad signature")


@pytest.mark.parametrize("missing", ["HTTP_X_HUBSPOT_SIGNATURE_V3", "HTTP_X_HUBSPOT_REQUEST_TIMESTAMP", "both"])
def test_it_rejects_a_webhook_without_its_signature_headers(api, connections, missing):
    body = json.dumps([deal_event()]).encode()
    ts = now_ms()
    headers = {"HTTP_X_HUBSPOT_SIGNATURE_V3": signature_v3(HUBSPOT_SECRET, "POST", HUBSPOT_URI, body, ts),
               "HTTP_X_HUBSPOT_REQUEST_TIMESTAMP": ts}
    if missing == "both":
        headers = {}
    else:
        del headers[missing]
    response = api.post(HUBSPOT_PATH, data=body, content_type="application/json", **headers)

    assert_only_rejection(response, 401, reason_contains="missing")


@pytest.mark.parametrize("ts", ["not-a-number", "1.7e12", ""])
def test_it_rejects_a_timestamp_that_is_not_milliseconds(api, connections, ts):
    body = json.dumps([deal_event()]).encode()
    response = post_hubspot(api, body, ts=ts, sig=signature_v3(HUBSPOT_SECRET, "POST", HUBSPOT_URI, body, ts))

    assert_only_rejection(response, 401)


def test_it_rejects_a_stale_timestamp(api, connections):
    six_minutes_ago = str(int(time.time() * 1000) - 6 * 60 * 1000)
    response = post_hubspot(api, [deal_event()], ts=six_minutes_ago)  # correctly signed, but too old

    assert_only_rejection(response, 401, reason_contains="stale")
    assert "stale" in error_of(response)


def test_it_rejects_a_timestamp_from_the_future(api, connections):
    in_ten_minutes = str(int(time.time() * 1000) + 10 * 60 * 1000)
    response = post_hubspot(api, [deal_event()], ts=in_ten_minutes)

    assert_only_rejection(response, 401, reason_contains="stale")


def test_it_accepts_a_timestamp_just_inside_the_window(api, connections):
    four_minutes_ago = str(int(time.time() * 1000) - 4 * 60 * 1000)
    response = post_hubspot(api, [deal_event()], ts=four_minutes_ago)

    assert response.status_code == 202
    assert InboundEvent.objects.get().status == InboundEvent.Status.RECEIVED


def test_it_rejects_a_replayed_old_request(api, connections):
    """An attacker who captured a genuine request replays it, byte for byte, after the window has passed."""
    body = json.dumps([deal_event(event_id=4242)]).encode()
    old_ts = str(int(time.time() * 1000) - 60 * 60 * 1000)
    captured_sig = signature_v3(HUBSPOT_SECRET, "POST", HUBSPOT_URI, body, old_ts)

    response = post_hubspot(api, body, ts=old_ts, sig=captured_sig)

    assert_only_rejection(response, 401, reason_contains="stale")


def test_a_replay_inside_the_window_is_only_a_redelivery(api, connections):
    body = json.dumps([deal_event(event_id=4343)]).encode()
    ts = now_ms()
    sig = signature_v3(HUBSPOT_SECRET, "POST", HUBSPOT_URI, body, ts)

    assert post_hubspot(api, body, ts=ts, sig=sig).status_code == 202
    assert post_hubspot(api, body, ts=ts, sig=sig).status_code == 200

    assert InboundEvent.objects.get().deliveries == 2
    process_inbox()
    assert SyncRecord.objects.count() == 1


def test_it_rejects_a_non_ascii_signature_header(api, connections):
    response = post_hubspot(api, [deal_event()], sig="sïgnature-é")

    assert_only_rejection(response, 401, reason_contains="signature")


def test_it_rejects_when_the_connection_has_no_client_secret(api, connections):
    Connection.objects.filter(slug="hubspot").update(inbound_secret="")
    response = post_hubspot(api, [deal_event()], secret="")

    assert_only_rejection(response, 401, reason_contains="secret")
