"""The signed callbacks the NetSuite and Kantata sandboxes send to Handoff (Standard Webhooks), as the firm's
SuiteScript user-event and Kantata's webhooks do.

Each callback is stored (SandboxObject "webhook_event") and sent to `configure_callbacks(...)`'s URL (default:
HANDOFF_PUBLIC_URL's callback for the system), signed with the connection's secret (default
credentials.INBOUND_SECRETS). Mode "hold" only stores them, for a test to deliver in any order (`deliver_callback`).
"""

from __future__ import annotations

import json
import logging
import uuid

import requests
from django.conf import settings

from apps.connectors import standard_webhooks

from .credentials import INBOUND_SECRETS
from .faults import system_config
from .http import now_text
from .models import SandboxObject, SandboxSystem

log = logging.getLogger("handoff.sandbox")


def callback_config(system: str) -> dict:
    s = system_config(system).settings or {}
    return {"url": s.get("webhook_url") or f"{settings.HANDOFF_PUBLIC_URL.rstrip('/')}/api/v1/callbacks/{system}/",
            "secret": s.get("webhook_secret") or INBOUND_SECRETS[system], "mode": s.get("webhook_mode") or "send"}


def configure_callbacks(system: str, *, url: str | None = None, secret: str | None = None,
                        mode: str | None = None) -> None:
    """Where the NetSuite / Kantata sandbox sends its callbacks (tests: the live server), or "hold" them."""
    cfg = system_config(system)
    s = dict(cfg.settings or {})
    for k, v in (("webhook_url", url), ("webhook_secret", secret), ("webhook_mode", mode)):
        if v is not None:
            s[k] = v
    SandboxSystem.objects.filter(pk=cfg.pk).update(settings=s)


def send_callback(event_type: str, data: dict, *, system: str = "netsuite", msg_id: str | None = None,
                  timestamp: str | None = None) -> dict:
    """Store the callback and send it (unless the system's callbacks are held). Returns the stored message."""
    cfg = callback_config(system)
    msg = {"id": msg_id or f"msg_{uuid.uuid4().hex}", "envelope": {
        "type": event_type, "timestamp": timestamp or now_text(), "data": json.loads(json.dumps(data, default=str))},
           "delivered": False, "deliveries": []}
    obj = SandboxObject.objects.create(system=system, object_type="webhook_event", external_key=msg["id"], data=msg)
    if cfg["mode"] == "send":
        deliver_callback(obj.external_key, system=system)
    return msg


def deliver_callback(msg_id: str, *, system: str = "netsuite", url: str | None = None, times: int = 1,
                     secret: str | None = None, timestamp: int | None = None) -> list:
    """(Re)send a stored callback `times` times: the same webhook-id and body each time, signed now."""
    obj = SandboxObject.objects.get(system=system, object_type="webhook_event", external_key=msg_id)
    cfg = callback_config(system)
    body = json.dumps(obj.data["envelope"]).encode()
    out = []
    for _ in range(times):
        headers = standard_webhooks.signed_headers(secret or cfg["secret"], msg_id, body, timestamp)
        try:
            resp = requests.post(url or cfg["url"], data=body, headers=headers, timeout=10)
            status = resp.status_code
        except requests.RequestException as exc:
            log.info("%s sandbox: callback %s not delivered: %s", system, msg_id, exc)
            resp, status = None, None
        out.append(resp)
        obj.data["deliveries"] = [*obj.data.get("deliveries", []), {"status": status}][-20:]
        obj.data["delivered"] = obj.data.get("delivered") or (status is not None and 200 <= status < 300)
    obj.save(update_fields=["data"])
    return out


def held_callbacks(system: str = "netsuite") -> list[dict]:
    """Stored, undelivered callbacks, oldest first: [{"id", "envelope"}]."""
    return [{"id": o.external_key, "envelope": o.data["envelope"]}
            for o in SandboxObject.objects.filter(system=system, object_type="webhook_event",
                                                  data__delivered=False).order_by("pk")]
