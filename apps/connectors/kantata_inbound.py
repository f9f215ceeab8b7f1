"""Kantata (PSA) callbacks: approved time entries, expenses and completed milestones, signed per Standard Webhooks.

One message per request (apps/connectors/standard_webhooks.py for the signature):

    POST /api/v1/callbacks/kantata/
    webhook-id: evt_…   webhook-timestamp: 1700000000   webhook-signature: v1,…
    {"type": "time_entry.approved", "timestamp": "2026-11-02T10:00:00Z", "data": { …the Kantata object… }}

`data` is the object as Kantata's API v1 returns it (time_entries, expenses, stories). The webhook-id is the
event id (the same on every retry, so a redelivery is stored once). Each event type is turned into an EventSpec
by a parser registered in PARSERS by the modules in PARSER_MODULES; a type nobody parses is stored as ignored.
"""

from __future__ import annotations

import importlib

from django.conf import settings

from . import standard_webhooks
from .inbound import EventSpec, Rejected, json_body

# event type → parse(connection, event_id, envelope) -> EventSpec (raise Rejected(400, why) for a bad object)
PARSERS: dict = {}
PARSER_MODULES = [
    "apps.connectors.kantata_time",  # time_entry.*, expense.*  → time_to_billing
    "apps.connectors.kantata_milestones",  # story.completed (milestones) → milestone_to_invoice
]
_loaded = False


def _load() -> None:
    global _loaded
    if not _loaded:
        for module in PARSER_MODULES:
            importlib.import_module(module)
        _loaded = True


def verify_and_parse(conn, *, method: str, uris: list[str], body: bytes, headers) -> list[EventSpec]:
    event_id = standard_webhooks.verify(conn.inbound_secret, headers=headers, body=body,
                                        max_age=settings.HANDOFF_SIGNATURE_MAX_AGE_SECONDS, who="Kantata")
    envelope = json_body(body, headers, "Kantata")
    if not isinstance(envelope, dict) or not isinstance(envelope.get("type"), str) \
            or not isinstance(envelope.get("data"), dict):
        raise Rejected(400, 'a Kantata event must be an object with a "type" string and a "data" object')
    _load()
    parser = PARSERS.get(envelope["type"])
    if parser is None:
        return [EventSpec(event_id=event_id, event_type=envelope["type"][:100], body=envelope,
                          ignored=f"no workflow acts on Kantata {envelope['type'][:100]!r} events")]
    return [parser(conn, event_id, envelope)]
