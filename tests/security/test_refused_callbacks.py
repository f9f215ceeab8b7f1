"""Refused callbacks: what is kept of them, how many one address may send, and the intake's last line of defence.

A stranger posting junk gets a short excerpt stored, not 64 KB a row; past the limit of refusals per source
address it gets 429 and nothing is stored; a sender whose signature was verified still has its whole refused body
kept for the admin; and an error nobody foresaw is a stored 400 with a correlation id, never a 500."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from apps.connectors.hubspot import inbound as hubspot_inbound
from apps.core.logging import JsonFormatter
from apps.sync import refusals
from apps.sync.models import Connection, InboundEvent
from tests.callbacks import SALESFORCE_PATH, deal_event, post_hubspot, post_kantata

pytestmark = pytest.mark.django_db

JUNK = b"GET /wp-login.php " + b"A" * 65_000


@pytest.fixture
def client():
    return APIClient()


def post_junk(client, slug: str = "no-such-connection", body: bytes = JUNK, addr: str = "203.0.113.7"):
    return client.post(f"/api/v1/callbacks/{slug}/", data=body, content_type="application/json",
                       REMOTE_ADDR=addr)


# ------------------------------------------------------------------ what is kept


def test_junk_to_an_unknown_connection_keeps_a_short_excerpt(client, connections):
    response = post_junk(client)

    assert response.status_code == 404
    event = InboundEvent.objects.get()
    assert event.connection is None and event.connection_slug == "no-such-connection"
    assert event.raw_body == JUNK[:refusals.EXCERPT_BYTES].decode()
    assert f"body of {len(JUNK)} bytes; the first {refusals.EXCERPT_BYTES} kept" in event.reason


def test_an_unsigned_request_to_a_known_connection_keeps_a_short_excerpt(client, connections):
    body = json.dumps([deal_event(note="x" * 20_000)]).encode()
    response = post_hubspot(client, body, headers=False)

    assert response.status_code == 401
    event = InboundEvent.objects.get()
    assert len(event.raw_body) == refusals.EXCERPT_BYTES
    assert "missing X-HubSpot-Signature-v3" in event.reason and f"body of {len(body)} bytes" in event.reason
    assert json.loads(response.content) == {"error": "missing X-HubSpot-Signature-v3 or X-HubSpot-Request-Timestamp "
                                                     "header"}  # the sender is not told what was kept


def test_a_bad_signature_keeps_a_short_excerpt(client, connections):
    body = json.dumps([deal_event(note="x" * 20_000)]).encode()
    response = post_hubspot(client, body, secret="not-the-secret")

    assert response.status_code == 401
    assert len(InboundEvent.objects.get().raw_body) == refusals.EXCERPT_BYTES


def test_a_salesforce_refusal_keeps_a_short_excerpt(client, connections):
    """Outbound Messages are not signed: the org id they carry is not a secret."""
    body = b"<notifications>" + b"<x/>" * 10_000
    response = client.post(SALESFORCE_PATH, data=body, content_type="text/xml")  # even on the secret URL

    assert response.status_code == 400
    assert len(InboundEvent.objects.get().raw_body) == refusals.EXCERPT_BYTES


def test_a_verified_but_refused_callback_keeps_its_body(client, connections):
    body = ('[{"eventId": 1, "subscriptionType": "deal.creation", "note": "' + "x" * 20_000 + '"').encode()
    response = post_hubspot(client, body)

    assert response.status_code == 400
    event = InboundEvent.objects.get()
    assert "malformed JSON" in event.reason and "kept" not in event.reason
    assert event.raw_body == body.decode()


@override_settings(HANDOFF_MAX_CALLBACK_BYTES=4096)
def test_an_oversize_body_is_refused_unread_with_an_excerpt(client, connections):
    body = json.dumps([deal_event(note="x" * 10_000)]).encode()
    response = post_hubspot(client, body)

    assert response.status_code == 413
    event = InboundEvent.objects.get()
    assert len(event.raw_body) == refusals.EXCERPT_BYTES
    assert f"body of {len(body)} bytes is over the 4096-byte limit" in event.reason


# ------------------------------------------------------------------ the limit per source address


@override_settings(HANDOFF_CALLBACK_REFUSAL_LIMIT=3)
def test_past_the_limit_refusals_get_a_429_and_are_not_stored(client, connections, carol):
    statuses = [post_junk(client, body=b"junk").status_code for _ in range(3)]
    assert statuses == [404, 404, 404]
    assert InboundEvent.objects.count() == 3

    throttled = post_junk(client, body=b"junk")
    signature_refused = post_hubspot(client, [deal_event()], secret="wrong")  # 127.0.0.1, its own count

    assert throttled.status_code == 429
    assert 1 <= int(throttled["Retry-After"]) <= 60
    assert "too many refused callbacks" in json.loads(throttled.content)["error"]
    assert InboundEvent.objects.count() == 4  # the refusal from the other address only
    assert signature_refused.status_code == 401
    client.force_login(carol)
    assert "\nhandoff_callbacks_throttled_total 1\n" in client.get("/metrics").content.decode()


@override_settings(HANDOFF_CALLBACK_REFUSAL_LIMIT=2)
def test_a_throttled_address_still_delivers_good_callbacks(client, connections):
    for _ in range(3):
        post_hubspot(client, [deal_event()], secret="wrong")
    assert post_hubspot(client, [deal_event()], secret="wrong").status_code == 429

    response = post_hubspot(client, [deal_event()])

    assert response.status_code == 202
    assert InboundEvent.objects.filter(verified=True).count() == 1


@override_settings(HANDOFF_CALLBACK_REFUSAL_LIMIT=2)
def test_a_throttled_salesforce_sender_gets_a_soap_fault(client, connections):
    for _ in range(2):
        client.post("/api/v1/callbacks/salesforce/", data=b"<x/>", content_type="text/xml")

    response = client.post("/api/v1/callbacks/salesforce/", data=b"<x/>", content_type="text/xml")

    assert response.status_code == 429 and response["Retry-After"]
    assert b"faultstring" in response.content


def test_when_redis_is_down_refusals_are_stored_as_usual(client, connections, settings, caplog):
    # one settings override only: the `settings` fixture's and an @override_settings stacked on it unwind out of
    # order, which leaked the limit of 1 into every later test
    settings.HANDOFF_CALLBACK_REFUSAL_LIMIT = 1
    settings.RQ_QUEUES = {**settings.RQ_QUEUES, "high": {"URL": "redis://127.0.0.1:1/0", "DEFAULT_TIMEOUT": 600}}

    statuses = [post_junk(client, body=b"junk").status_code for _ in range(3)]

    assert statuses == [404, 404, 404]
    assert InboundEvent.objects.count() == 3
    assert "Redis is unreachable" in caplog.text


# ------------------------------------------------------------------ the last line of defence


def test_an_unexpected_error_is_a_stored_400_with_a_correlation_id(client, connections, monkeypatch, caplog):
    def broken_parser(conn, data):
        raise ZeroDivisionError("a bug nobody foresaw")

    monkeypatch.setattr(hubspot_inbound, "parse_events", broken_parser)
    caplog.handler.setFormatter(JsonFormatter())  # as production writes it: with the context of the block
    response = post_hubspot(client, [deal_event()])

    assert response.status_code == 400
    answer = json.loads(response.content)
    correlation_id = answer["correlation_id"]
    assert correlation_id in answer["error"]
    event = InboundEvent.objects.get()
    assert event.status == InboundEvent.Status.REJECTED and event.http_status == 400
    assert correlation_id in event.reason and "unexpected error" in event.reason
    assert event.connection == Connection.objects.get(slug="hubspot")
    [line] = [entry for entry in map(json.loads, caplog.text.splitlines()) if entry["logger"] == "handoff.intake"]
    assert line["correlation_id"] == correlation_id and line["connection"] == "hubspot"
    assert "ZeroDivisionError: a bug nobody foresaw" in line["exception"]  # the traceback


def test_a_database_error_is_a_stored_400_not_a_500(client, connections):
    """A Kantata message id longer than the event id column: whether the connector refuses it or the database
    does, the sender gets a 4xx and the refusal is on record."""
    response = post_kantata(client, {"type": "workspace.archived", "data": {}}, msg_id="m" * 300)

    assert 400 <= response.status_code < 500, response.content
    event = InboundEvent.objects.get()
    assert event.status == InboundEvent.Status.REJECTED and event.http_status == response.status_code


def test_a_malformed_content_length_is_a_4xx_not_a_500(client, connections):
    response = client.post("/api/v1/callbacks/hubspot/", data=b"[]", content_type="application/json",
                           CONTENT_LENGTH="abc")

    assert 400 <= response.status_code < 500
    assert InboundEvent.objects.get().status == InboundEvent.Status.REJECTED
