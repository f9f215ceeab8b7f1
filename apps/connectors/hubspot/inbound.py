"""HubSpot webhooks v3: verified with X-HubSpot-Signature-v3, checked, parsed. Every refusal of a HubSpot
callback is made here (the JSON checks by the shared apps/connectors/callbacks.json_body).

Signature v3 (HubSpot docs, "Validating requests"): base64(HMAC-SHA256(client secret,
method + URI + body + timestamp)), where the timestamp is X-HubSpot-Request-Timestamp in milliseconds, and a
request older than HANDOFF_SIGNATURE_MAX_AGE_SECONDS (5 minutes) is refused. A webhook body is a JSON array of at
most 100 events; a deal-stage event carries only ids (`objectId`), so the workflow fetches the deal and its
company through the CRM v3 API (client.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timezone

from django.conf import settings

from apps.connectors import ids
from apps.connectors.callbacks import EventSpec, Rejected, checked_id, json_body, signed_at


def signature_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    # HubSpot decodes these URL-encoded characters in the URI before signing
    for enc, dec in (("%3A", ":"), ("%2F", "/"), ("%3F", "?"), ("%40", "@"), ("%21", "!"), ("%24", "$"),
                     ("%27", "'"), ("%28", "("), ("%29", ")"), ("%2A", "*"), ("%2C", ","), ("%3B", ";")):
        uri = uri.replace(enc, dec)
    message = method.encode() + uri.encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def verify(connection, *, method: str, uris: list[str], body: bytes, headers, max_age: int) -> None:
    """Raise Rejected(401) unless the request carries a valid, fresh v3 signature."""
    sig = headers.get("X-HubSpot-Signature-v3", "")
    ts = headers.get("X-HubSpot-Request-Timestamp", "")
    if not sig or not ts:
        raise Rejected(401, "missing X-HubSpot-Signature-v3 or X-HubSpot-Request-Timestamp header")
    signed_at(ts, name="X-HubSpot-Request-Timestamp", per_second=1000, max_age=max_age, who="")
    if not connection.inbound_secret:
        raise Rejected(401, "this connection has no client secret configured to verify signatures")
    # compare bytes: compare_digest refuses str with non-ASCII characters (a forged header must be a 401, not a 500)
    sig_bytes = sig.encode("utf-8", "replace")
    for uri in uris:
        if hmac.compare_digest(signature_v3(connection.inbound_secret, method, uri,
                                            body, ts).encode(), sig_bytes):
            return
    raise Rejected(401, "bad signature: X-HubSpot-Signature-v3 does not match the body")


def _iso_ms(value) -> str:
    """HubSpot's occurredAt (epoch ms) as a sortable UTC timestamp; "" when absent or invalid."""
    try:
        return datetime.fromtimestamp(int(value) / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


def parse_events(connection, data) -> list[EventSpec]:
    """One EventSpec per webhook event; a closed-won deal stage starts quote-to-project, an approved amendment
    (amendment_status) a change order; anything else is ignored."""
    if not isinstance(data, list) or not data:
        raise Rejected(400, "a HubSpot webhook body must be a non-empty JSON array of events")
    if len(data) > 100:
        raise Rejected(400, "HubSpot sends at most 100 events per request")
    closed_won = set(connection.settings.get("closed_won_stages", ["closedwon"]))
    out = []
    for i, ev in enumerate(data):
        if not isinstance(ev, dict) or "eventId" not in ev or "subscriptionType" not in ev:
            raise Rejected(400, f"event {i} lacks eventId or subscriptionType")
        checked_id(ids.hubspot_id, ev.get("eventId"), f"event {i}: eventId", "HubSpot")
        stype = str(ev["subscriptionType"])[:60]
        etype = stype if stype != "deal.propertyChange" else f"{stype}:{ev.get('propertyName', '')}"
        spec = EventSpec(event_id=str(ev["eventId"]), event_type=etype[:100], body=ev)
        if stype == "deal.propertyChange" and ev.get("propertyName") == "dealstage":
            if str(ev.get("propertyValue")) in closed_won:
                deal_id = _object_id(ev, i)
                spec.workflow = "quote_to_project"
                spec.source_key = f"deal:{deal_id}"
                spec.payload = {"deal_id": deal_id, "portal_id": ev.get("portalId"),
                                "source_modified_at": _iso_ms(ev.get("occurredAt"))}
                spec.title = f"HubSpot deal {deal_id}"
            else:
                spec.ignored = f"deal stage {ev.get('propertyValue')!r} is not closed-won"
        elif stype == "deal.propertyChange" and ev.get("propertyName") == "amendment_status":
            _amendment_event(connection, ev, i, spec)
        else:
            spec.ignored = f"no workflow acts on {etype}"
        out.append(spec)
    return out


def _amendment_event(connection, ev: dict, i: int, spec: EventSpec) -> None:
    """An approved amendment starts a change order. The deal holds one current amendment (its id comes with the
    fetch), so the record is per deal and runs again for each newer approval."""
    approved = {v.lower() for v in connection.settings.get("amendment_approved_values", ["approved"])}
    if str(ev.get("propertyValue") or "").lower() not in approved:
        spec.ignored = f"amendment status {ev.get('propertyValue')!r} is not approved"
        return
    deal_id = _object_id(ev, i)
    occurred = _iso_ms(ev.get("occurredAt"))
    if not occurred:
        raise Rejected(400, f"event {i}: occurredAt must be the change's time in epoch milliseconds")
    spec.workflow = "change_order"
    spec.source_key = f"amendment:deal-{deal_id}"
    spec.payload = {"deal_id": deal_id, "portal_id": ev.get("portalId"), "approved_at": occurred,
                    "source_modified_at": occurred}
    spec.title = f"Change order on HubSpot deal {deal_id}"


def _object_id(ev: dict, i: int) -> str:
    """The deal's id, a HubSpot object id (it goes into the CRM API's URL): missing or not numeric is a 400."""
    if ev.get("objectId") in (None, ""):
        raise Rejected(400, f"event {i}: objectId is missing")
    return checked_id(ids.hubspot_id, ev["objectId"], f"event {i}: objectId", "HubSpot")


def verify_and_parse(conn, *, method: str, uris: list[str], body: bytes, headers) -> list[EventSpec]:
    verify(conn, method=method, uris=uris, body=body, headers=headers,
           max_age=settings.HANDOFF_SIGNATURE_MAX_AGE_SECONDS)
    return parse_events(conn, json_body(body, headers, "HubSpot webhooks"))
