"""Fault injection and auth shared by the sandboxes, with each vendor's own error shapes."""

from __future__ import annotations

import json
import random
import time

from django.conf import settings
from django.db import connection as db
from django.db.models import F
from django.http import HttpResponse

from .credentials import DEFAULT_TOKENS
from .models import SandboxSystem


def system_config(system: str) -> SandboxSystem:
    obj, _ = SandboxSystem.objects.get_or_create(system=system, defaults={"token": DEFAULT_TOKENS.get(system, "x")})
    return obj


def json_response(data, status=200, headers=None) -> HttpResponse:
    resp = HttpResponse(json.dumps(data, default=str), status=status, content_type="application/json")
    for k, v in (headers or {}).items():
        resp[k] = v
    return resp


def error_body(system: str, status: int, message: str, code: str = "", field: str = ""):
    if system == "hubspot":
        category = {401: "INVALID_AUTHENTICATION", 404: "OBJECT_NOT_FOUND", 429: "RATE_LIMITS",
                    400: "VALIDATION_ERROR"}.get(status, "INTERNAL_ERROR")
        return {"status": "error", "message": message, "correlationId": f"sbx-{random.randrange(10**9)}",
                "category": category}
    if system == "netsuite":
        return {"type": "https://www.rfc-editor.org/rfc/rfc9110.html#section-15", "title": message, "status": status,
                "o:errorDetails": [{"detail": message, "o:errorCode": code or "UNEXPECTED_ERROR",
                                    **({"o:errorPath": field} if field else {})}]}
    if system == "kantata":
        return {"errors": [{"type": code or ("validation" if status == 422 else "system"), "message": message,
                            **({"field": field} if field else {})}]}
    if system == "salesforce":
        return [{"message": message, "errorCode": code or "UNKNOWN_EXCEPTION", "fields": [field] if field else []}]
    return {"error": message}


def error(system: str, status: int, message: str, code: str = "", field: str = "", headers=None) -> HttpResponse:
    return json_response(error_body(system, status, message, code, field), status, headers)


def check(request, system: str) -> HttpResponse | None:
    """Auth first (as the vendor would), then injected faults. None means: serve the request."""
    cfg = system_config(system)
    auth = request.headers.get("Authorization", "")
    if auth != f"Bearer {cfg.token}":
        code = {"netsuite": "INVALID_LOGIN", "salesforce": "INVALID_SESSION_ID"}.get(system, "authentication")
        return error(system, 401, "Authentication credentials not found or invalid.", code)
    if cfg.latency_ms:
        time.sleep(cfg.latency_ms / 1000)
    if cfg.fail_next_count:
        # decrement atomically: concurrent calls each consume one injected failure
        if SandboxSystem.objects.filter(system=system, fail_next_count__gt=0).update(
                fail_next_count=F("fail_next_count") - 1):
            return _fault(system, cfg.fail_next_status, cfg)
    r = random.random()
    if r < cfg.rate_limit_rate:
        return _fault(system, 429, cfg)
    if r < cfg.rate_limit_rate + cfg.error_rate:
        return _fault(system, 500, cfg)
    if r < cfg.rate_limit_rate + cfg.error_rate + cfg.timeout_rate:
        # the call hangs past the client's timeout (nothing is written); whoever still listens then gets a 504
        hang(hang_seconds(cfg))
        return _fault(system, 504, cfg)
    if cfg.lost_response_rate and random.random() < cfg.lost_response_rate:
        # serve the call in full (the write commits), then hang: the caller times out and never sees the answer
        # (http.sandbox_view does the hanging, after the view has run)
        request.sandbox_lose_response = hang_seconds(cfg)
    return None


def hang_seconds(cfg: SandboxSystem) -> float:
    """How long a timed-out or lost call hangs: long enough for the caller's timeout to fire."""
    return cfg.hang_ms / 1000 if cfg.hang_ms else float(settings.HANDOFF_HTTP_TIMEOUT) + 1.0


def hang(seconds: float) -> None:
    """Sleep without holding a database connection (hung calls must not exhaust PostgreSQL's connections)."""
    if not db.in_atomic_block:
        db.close()
    time.sleep(seconds)


def _fault(system: str, status: int, cfg: SandboxSystem) -> HttpResponse:
    if status == 429:
        msg = {"hubspot": "You have reached your secondly limit.",
               "netsuite": "Concurrent request limit exceeded. Request blocked.",
               "kantata": "Rate limit exceeded.",
               "salesforce": "TotalRequests Limit exceeded."}.get(system, "Too many requests")
        code = {"netsuite": "CONCURRENCY_LIMIT_EXCEEDED", "salesforce": "REQUEST_LIMIT_EXCEEDED"}.get(system, "")
        return error(system, 429, msg, code, headers={"Retry-After": str(cfg.retry_after_seconds)})
    if status == 504:
        return error(system, 504, "The request timed out (sandbox fault injection).")
    return error(system, status, "The service is temporarily unavailable (sandbox fault injection).")
