"""What POST /api/v1/callbacks/<connection>/ refuses before any event is stored: bodies that are not what the
vendor sends (malformed or deeply nested JSON, invalid UTF-8, NUL characters, the wrong content type, oversize),
unknown or disabled connections, methods other than POST. Each refusal is a 4xx and exactly one stored rejection;
nothing refused ever becomes a sync record. (Shown on the HubSpot connection; the checks are the intake's.)"""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from apps.sync.models import Connection, InboundEvent

from tests.callbacks import HUBSPOT_PATH, assert_only_rejection, deal_event, error_of, post_hubspot

pytestmark = pytest.mark.django_db


# ------------------------------------------------------------------ HubSpot: refused bodies


def test_it_rejects_malformed_json(api, connections):
    response = post_hubspot(api, b'[{"eventId": 1, "subscriptionType": ')

    event = assert_only_rejection(response, 400, reason_contains="malformed JSON")
    assert event.raw_body == '[{"eventId": 1, "subscriptionType": '


@pytest.mark.parametrize("body", [
    {"eventId": 1, "subscriptionType": "deal.propertyChange"},
    [],
    "a string",
    42,
    None,
])
def test_it_rejects_a_body_that_is_not_a_non_empty_json_array(api, connections, body):
    response = post_hubspot(api, body)

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
def test_it_rejects_an_event_without_the_fields_it_needs(api, connections, event):
    response = post_hubspot(api, [deal_event(event_id=1), event])

    assert_only_rejection(response, 400, reason_contains="event 1")


def test_it_rejects_more_than_100_events(api, connections):
    response = post_hubspot(api, [deal_event(event_id=i) for i in range(101)])

    assert_only_rejection(response, 400, reason_contains="100")


def test_it_rejects_invalid_utf8(api, connections):
    body = b'[{"eventId": 1, "subscriptionType": "deal.propertyChange", "x": "\xff\xfe"}]'
    response = post_hubspot(api, body)

    event = assert_only_rejection(response, 400, reason_contains="UTF-8")
    assert "\ufffd" in event.raw_body  # kept readable for the admin


@pytest.mark.parametrize("body", [b"[" * 100_000, b"[" * 100_000 + b"]" * 100_000,
                                  b'[{"eventId": 1, "subscriptionType": "x", "d": ' + b"{\"a\":" * 50_000 + b"1"
                                  + b"}" * 50_000 + b"}]"])
def test_it_refuses_deeply_nested_json_without_crashing(api, connections, body):
    response = post_hubspot(api, body)

    assert 400 <= response.status_code < 500
    assert_only_rejection(response, response.status_code)


def test_it_stores_moderately_nested_json_without_crashing(api, connections):
    nested = {"eventId": 1, "subscriptionType": "deal.creation", "d": json.loads("[" * 800 + "]" * 800)}
    response = post_hubspot(api, [nested])

    assert response.status_code == 200, response.content
    stored = InboundEvent.objects.get()
    assert stored.status == InboundEvent.Status.IGNORED and stored.verified is True
    assert json.loads(stored.raw_body)["d"] == nested["d"]


def test_it_stores_a_nul_character_in_text_without_crashing(api, connections):
    events = [deal_event(event_id=10, deal_id=123),
              {"eventId": 2, "subscriptionType": "contact.\u0000creation", "note": "a\u0000b"}]
    response = post_hubspot(api, events)

    assert response.status_code == 202, response.content
    assert json.loads(response.content) == {"accepted": 1, "duplicates": 0, "ignored": 1}
    # PostgreSQL cannot store NUL: it becomes U+FFFD (not dropped, so a<NUL>b is not mistaken for ab)
    other = InboundEvent.objects.get(status="ignored")
    assert other.event_type == "contact.\ufffdcreation"
    assert json.loads(other.raw_body)["note"] == "a\ufffdb"


def test_an_id_with_a_nul_character_is_refused_not_cut(api, connections):
    # no HubSpot id holds a NUL: deal 12<NUL>3 is refused, never stored as (or mistaken for) deal 123
    response = post_hubspot(api, [deal_event(event_id=10, deal_id="12\u00003")])

    event = assert_only_rejection(response, 400, reason_contains="objectId")
    assert json.loads(event.raw_body)[0]["objectId"] == "12\u00003"  # the body kept as sent (an escape, no NUL)


def test_it_rejects_a_connection_name_with_a_nul_character(api, connections):
    response = api.post("/api/v1/callbacks/hub%00spot/", data=b"[]", content_type="application/json")

    event = assert_only_rejection(response, 404, connection=None)
    assert event.connection_slug == "hub\ufffdspot"


@override_settings(HANDOFF_MAX_CALLBACK_BYTES=2048)
def test_it_rejects_an_oversize_body_for_a_connection_name_with_a_nul_character(api, connections):
    response = api.post("/api/v1/callbacks/hub%00spot/", data=b"x" * 5000, content_type="application/json")

    assert_only_rejection(response, 404, connection=None)


def test_it_keeps_a_header_with_a_nul_character_readable(api, connections):
    response = post_hubspot(api, [deal_event()], HTTP_USER_AGENT="bot\x00/1")

    assert response.status_code == 202
    assert InboundEvent.objects.get().headers["User-Agent"] == "bot\ufffd/1"


def test_a_rejection_keeps_a_header_with_a_nul_character_readable(api, connections):
    response = api.post(HUBSPOT_PATH, data=b"[]", content_type="application/json", HTTP_USER_AGENT="bot\x00/1")

    assert assert_only_rejection(response, 401).headers["User-Agent"] == "bot\ufffd/1"


def test_a_literal_backslash_u0000_in_text_is_stored_intact(api, connections):
    text = "C:\\u0000\\path"  # the six characters \u0000, not a NUL
    response = post_hubspot(api, [{"eventId": 11, "subscriptionType": "contact.creation", "note": text}])

    assert response.status_code == 200, response.content
    stored = InboundEvent.objects.get()
    assert json.loads(stored.raw_body)["note"] == text
    assert stored.status == InboundEvent.Status.IGNORED


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "text/xml",
                                          "application/jsonx"])
def test_it_rejects_a_webhook_with_the_wrong_content_type(api, connections, content_type):
    response = post_hubspot(api, [deal_event()], content_type=content_type)

    assert_only_rejection(response, 415, reason_contains="application/json")


def test_it_accepts_json_with_a_charset_parameter(api, connections):
    response = post_hubspot(api, [deal_event()], content_type="application/json; charset=utf-8")

    assert response.status_code == 202
    assert InboundEvent.objects.get().status == InboundEvent.Status.RECEIVED


def test_an_unsigned_request_is_refused_before_its_content_type_is_checked(api, connections):
    response = post_hubspot(api, b"hello", content_type="text/plain", headers=False)

    assert_only_rejection(response, 401)


@override_settings(HANDOFF_MAX_CALLBACK_BYTES=2048)
def test_it_rejects_an_oversize_body(api, connections):
    events = [deal_event(event_id=i, deal_id=i) for i in range(40)]
    body = json.dumps(events).encode()
    assert len(body) > 2048
    response = post_hubspot(api, body)

    event = assert_only_rejection(response, 413, reason_contains="limit")
    assert "2048" in event.reason
    assert len(event.raw_body) <= 65_536


@override_settings(HANDOFF_MAX_CALLBACK_BYTES=2048)
def test_a_body_at_the_size_limit_is_accepted(api, connections):
    event = deal_event(event_id=1)
    event["pad"] = ""
    base = len(json.dumps([event]).encode())
    event["pad"] = "x" * (2048 - base)
    body = json.dumps([event]).encode()
    assert len(body) == 2048
    response = post_hubspot(api, body)

    assert response.status_code == 202
    assert InboundEvent.objects.get().status == InboundEvent.Status.RECEIVED


@override_settings(HANDOFF_MAX_CALLBACK_BYTES=2048)
def test_it_rejects_an_oversize_body_for_an_unknown_connection_as_unknown(api, connections):
    response = api.post("/api/v1/callbacks/nope/", data=b"x" * 5000, content_type="application/json")

    assert_only_rejection(response, 404, connection=None)


def test_it_rejects_an_unknown_connection(api, connections):
    response = post_hubspot(api, [deal_event()], path="/api/v1/callbacks/pipedrive/",
                            uri="http://testserver/api/v1/callbacks/pipedrive/")

    event = assert_only_rejection(response, 404, connection=None)
    assert event.connection_slug == "pipedrive"
    assert "pipedrive" in error_of(response)


def test_it_rejects_an_unknown_connection_with_a_very_long_name(api, connections):
    slug = "x" * 300
    response = api.post(f"/api/v1/callbacks/{slug}/", data=b"[]", content_type="application/json")

    event = assert_only_rejection(response, 404, connection=None)
    assert event.connection_slug == "x" * 50


def test_it_rejects_a_callback_to_a_connection_that_receives_none(api, connections):
    response = post_hubspot(api, [deal_event()], path="/api/v1/callbacks/anaplan/",
                            uri="http://testserver/api/v1/callbacks/anaplan/")

    assert_only_rejection(response, 404, connection="anaplan", reason_contains="does not receive callbacks")


def test_it_rejects_a_callback_to_a_disabled_connection(api, connections):
    Connection.objects.filter(slug="hubspot").update(enabled=False)
    response = post_hubspot(api, [deal_event()])

    assert_only_rejection(response, 403, reason_contains="disabled")


def test_it_answers_only_post(api, connections):
    response = api.get(HUBSPOT_PATH)

    assert response.status_code == 405
    assert InboundEvent.objects.count() == 0


def test_a_refused_request_does_not_block_a_later_valid_one(api, connections):
    post_hubspot(api, [deal_event(event_id=66)], sig="forged")
    response = post_hubspot(api, [deal_event(event_id=66)])

    assert response.status_code == 202
    assert dict(InboundEvent.objects.values_list("status", "verified")) == {"rejected": False, "received": True}
