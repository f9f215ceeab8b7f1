"""One signed-callback sender per external system, for every test that posts to /api/v1/callbacks/<connection>/.

Each sender signs the exact bytes it sends, the way that vendor does, unless the test overrides a part of it to
see the refusal: HubSpot (signature v3 over method, URI, body and a millisecond timestamp), Salesforce (an
Outbound Message, to the connection's secret callback URL: Salesforce does not sign it), Kantata and NetSuite
(Standard Webhooks headers), Stripe (`Stripe-Signature: t=…,v1=…`). `assert_only_rejection` is the one check that a refused request left nothing
behind but its rejection.
"""

from __future__ import annotations

import json
import random
import time
import uuid

from apps.connectors.hubspot.inbound import signature_v3
from apps.connectors.salesforce.inbound import build_outbound_message
from apps.connectors.standard_webhooks.signature import signed_headers
from apps.demo.deals import make_opportunity
from apps.demo.firm import SALESFORCE_ORG
from apps.connectors.ids import salesforce_id18
from apps.sandbox.credentials import CALLBACK_URL_SECRETS, INBOUND_SECRETS
from apps.sandbox.stripe import webhooks as stripe_webhooks
from apps.sync.intake import process_inbox
from apps.sync.models import InboundEvent, SyncRecord

HUBSPOT_SECRET = "test-hubspot-client-secret"  # what the `connections` fixtures give the HubSpot connection
HUBSPOT_PATH = "/api/v1/callbacks/hubspot/"
HUBSPOT_URI = "http://testserver" + HUBSPOT_PATH
# Salesforce does not sign its messages: the demo connection's callback URL carries its secret
SALESFORCE_PATH = f"/api/v1/callbacks/salesforce/{CALLBACK_URL_SECRETS['salesforce']}/"
KANTATA_PATH = "/api/v1/callbacks/kantata/"
NETSUITE_PATH = "/api/v1/callbacks/netsuite/"
STRIPE_PATH = "/api/v1/callbacks/stripe/"


# ------------------------------------------------------------------ HubSpot (webhooks v3)


def now_ms() -> str:
    return str(int(time.time() * 1000))


def deal_event(event_id=1001, deal_id=123, stage="closedwon", **overrides) -> dict:
    """One HubSpot deal.propertyChange event as HubSpot sends it."""
    ev = {"eventId": event_id, "subscriptionId": 7, "portalId": 62515, "appId": 1,
          "occurredAt": int(time.time() * 1000), "subscriptionType": "deal.propertyChange", "attemptNumber": 0,
          "objectId": deal_id, "propertyName": "dealstage", "propertyValue": stage, "changeSource": "CRM"}
    ev.update(overrides)
    return ev


def hubspot_headers(secret: str, uri: str, body: bytes, ts: str | None = None) -> dict[str, str]:
    """The two headers HubSpot adds, as HTTP header names (for a real HTTP client)."""
    ts = now_ms() if ts is None else ts
    return {"X-HubSpot-Signature-v3": signature_v3(secret, "POST", uri, body, ts), "X-HubSpot-Request-Timestamp": ts}


def post_hubspot(client, body, *, secret=HUBSPOT_SECRET, ts=None, sig=None, content_type="application/json",
                 uri=HUBSPOT_URI, path=HUBSPOT_PATH, headers=True, **meta):
    """POST a HubSpot webhook (a list of events or raw bytes), signed over the exact bytes sent unless `sig` says
    otherwise; `headers=False` sends no signature headers at all; `meta` adds request headers (HTTP_… keys)."""
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    ts = now_ms() if ts is None else ts
    sig = signature_v3(secret, "POST", uri, body, ts) if sig is None else sig
    if headers:
        meta.update(HTTP_X_HUBSPOT_SIGNATURE_V3=sig, HTTP_X_HUBSPOT_REQUEST_TIMESTAMP=ts)
    return client.post(path, data=body, content_type=content_type, **meta)


# ------------------------------------------------------------------ Salesforce (Outbound Messages)


def salesforce_id(stem: str) -> str:
    """A valid 18-character Salesforce id (its case-safe checksum included) from a readable stem, zero-padded to
    15 characters: salesforce_id("006SAME") == "006SAME00000000" + its 3-character suffix."""
    return salesforce_id18(stem.ljust(15, "0"))


OPP_ID = salesforce_id("006SB0000000001")


def opportunity_fields(seed=1, opp_id=OPP_ID, **overrides) -> dict:
    """A won opportunity's fields as an Outbound Message carries them."""
    opp = make_opportunity(random.Random(seed), "good")
    fields = opp.as_salesforce(opp_id, salesforce_id("001SB0000000001"))
    fields.update(overrides)
    return fields


def outbound(notifications, org_id=SALESFORCE_ORG, **kw) -> bytes:
    """An Outbound Message body: `notifications` is a list of (notification id, fields)."""
    return build_outbound_message(org_id=org_id, notifications=list(notifications), **kw)


def post_salesforce(client, body: bytes, content_type="text/xml; charset=utf-8", path=SALESFORCE_PATH):
    return client.post(path, data=body, content_type=content_type, HTTP_SOAPACTION='""')


# ------------------------------------------------------------------ Kantata and NetSuite (Standard Webhooks)


def post_standard_webhook(client, path: str, secret: str, body: dict | bytes, *, msg_id=None, ts=None, sig=None,
                          content_type="application/json"):
    """POST `body` with webhook-id / webhook-timestamp / webhook-signature headers; `sig` replaces the
    signature (an empty string sends the header empty)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = signed_headers(secret, msg_id or f"msg_{uuid.uuid4().hex}", raw, ts)
    headers.pop("Content-Type")
    if sig is not None:
        headers["webhook-signature"] = sig
    return client.post(path, data=raw, content_type=content_type, headers=headers)


def kantata_envelope(data: dict, event_type="story.completed") -> dict:
    """The envelope Kantata wraps an object in (a completed story unless `event_type` says otherwise)."""
    return {"type": event_type, "timestamp": data.get("updated_at", ""), "data": data}


def post_kantata(client, envelope: dict | bytes, *, secret=None, **kw):
    return post_standard_webhook(client, KANTATA_PATH, secret or INBOUND_SECRETS["kantata"], envelope, **kw)


def post_netsuite(client, envelope: dict | bytes, *, secret=None, **kw):
    return post_standard_webhook(client, NETSUITE_PATH, secret or INBOUND_SECRETS["netsuite"], envelope, **kw)


# ------------------------------------------------------------------ Stripe


def post_stripe(client, payload: bytes | dict, *, secret=None, t=None, header=None, content_type="application/json"):
    """POST a Stripe event signed as Stripe documents it; `header=""` sends no Stripe-Signature at all."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    if header is None:
        secret = secret or INBOUND_SECRETS["stripe"]
        header = stripe_webhooks.signature_header(secret, body.decode("utf-8", "replace"), t)
    extra = {"HTTP_STRIPE_SIGNATURE": header} if header != "" else {}
    return client.post(STRIPE_PATH, data=body, content_type=content_type, **extra)


# ------------------------------------------------------------------ what a refusal leaves behind


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
