"""Stripe's webhooks from the Stripe sandbox: state changes emit events, each carrying the object (`data.object`)
as it is after the change. Events are stored (GET /v1/events/<id>) and delivered right after the request commits
to the endpoint configured with `configure_webhooks` (default: HANDOFF_PUBLIC_URL's Stripe callback, signed with
credentials.INBOUND_SECRETS["stripe"]), with `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret,
"<t>.<body>")>`. Mode "hold" stores them undelivered so a test can deliver them in any order (`deliver_event`),
as Stripe's retries do."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time

import requests
from django.conf import settings

from ..credentials import INBOUND_SECRETS
from ..faults import system_config
from ..models import SandboxObject, SandboxSystem
from .api import API_VERSION, int_param, list_of, new_id, now, respond

log = logging.getLogger("handoff.sandbox")

ENABLED_EVENTS = ["invoice.finalized", "invoice.paid", "invoice.payment_failed", "invoice.voided",
                  "invoice.marked_uncollectible", "charge.dispute.created"]


def events(request, params, outbox, m):
    qs = SandboxObject.objects.filter(system="stripe", object_type="event")
    if params.get("type"):
        qs = qs.filter(data__event__type=params["type"])
    limit = min(int_param(params, "limit", default=10), 100)
    return respond(list_of("event", [o.data["event"] for o in qs.order_by("-pk")[:limit]], "/v1/events"))


def webhook_config() -> dict:
    """Where events go: SandboxSystem("stripe").settings, else HANDOFF_PUBLIC_URL's Stripe callback."""
    s = system_config("stripe").settings or {}
    return {"url": s.get("webhook_url") or settings.HANDOFF_PUBLIC_URL.rstrip("/") + "/api/v1/callbacks/stripe/",
            "secret": s.get("webhook_secret") or INBOUND_SECRETS["stripe"],
            "mode": s.get("webhook_mode") or "send", "enabled_events": s.get("enabled_events") or ENABLED_EVENTS}


def configure_webhooks(*, url: str | None = None, secret: str | None = None, mode: str | None = None,
                       enabled_events: list[str] | None = None) -> None:
    """Point the sandbox's webhook endpoint somewhere (tests: the live server), or hold events ("hold")."""
    cfg = system_config("stripe")
    s = dict(cfg.settings or {})
    for k, v in (("webhook_url", url), ("webhook_secret", secret), ("webhook_mode", mode),
                 ("enabled_events", enabled_events)):
        if v is not None:
            s[k] = v
    SandboxSystem.objects.filter(pk=cfg.pk).update(settings=s)


def signature_header(secret: str, payload: str, timestamp: int | None = None) -> str:
    """Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<payload>" keyed with the endpoint secret>."""
    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{ts}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def emit(event_type: str, obj: dict, *, request_id: str | None = None, idempotency_key: str | None = None) -> dict:
    """Store an event carrying the object as it is now, and deliver it unless held or not subscribed."""
    event = {"id": new_id("event"), "object": "event", "api_version": API_VERSION, "created": now(),
             "data": {"object": json.loads(json.dumps(obj))}, "livemode": False, "pending_webhooks": 1,
             "request": {"id": request_id, "idempotency_key": idempotency_key}, "type": event_type}
    cfg = webhook_config()
    subscribed = "*" in cfg["enabled_events"] or event_type in cfg["enabled_events"]
    SandboxObject.objects.create(system="stripe", object_type="event", external_key=event["id"],
                                 data={"event": event, "delivered": False, "subscribed": subscribed,
                                       "deliveries": []})
    if subscribed and cfg["mode"] == "send":
        deliver_event(event["id"])
    return event


def deliver_event(event_id: str, *, url: str | None = None, secret: str | None = None,
                  timestamp: int | None = None) -> requests.Response | None:
    """(Re)send a stored event exactly as Stripe does: the same id and body, signed now (or at `timestamp`)."""
    obj = SandboxObject.objects.get(system="stripe", object_type="event", external_key=event_id)
    cfg = webhook_config()
    payload = json.dumps(obj.data["event"], indent=2)
    headers = {"Content-Type": "application/json; charset=utf-8",
               "Stripe-Signature": signature_header(secret or cfg["secret"], payload, timestamp),
               "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"}
    try:
        resp = requests.post(url or cfg["url"], data=payload.encode(), headers=headers, timeout=10)
        status = resp.status_code
    except requests.RequestException as exc:
        log.info("stripe sandbox: webhook %s not delivered: %s", event_id, exc)
        resp, status = None, None
    obj.data["deliveries"] = [*obj.data.get("deliveries", []), {"at": now(), "status": status}][-20:]
    obj.data["delivered"] = obj.data.get("delivered") or (status is not None and 200 <= status < 300)
    obj.save(update_fields=["data"])
    return resp


def undelivered_events() -> list[dict]:
    """Events stored but not yet answered 2xx by the endpoint, oldest first."""
    return [o.data["event"] for o in SandboxObject.objects.filter(
        system="stripe", object_type="event", data__delivered=False, data__subscribed=True).order_by("pk")]


def events_for(object_id: str, event_type: str | None = None) -> list[dict]:
    """Stored events whose object is `object_id`, oldest first."""
    qs = SandboxObject.objects.filter(system="stripe", object_type="event", data__event__data__object__id=object_id)
    if event_type:
        qs = qs.filter(data__event__type=event_type)
    return [o.data["event"] for o in qs.order_by("pk")]
