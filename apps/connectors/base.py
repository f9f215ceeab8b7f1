"""What every connector shares: an HTTP client that records each attempt and classifies failures.

A `DownstreamError` says whether a retry can help (Healthchecks' TransportError idea): timeouts, connection
errors, 5xx and 429 are transient and retried with backoff; any other 4xx is permanent and becomes an exception
for a person, carrying the system's own message and the field it named.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import quote

import requests
from django.conf import settings

_local = threading.local()
log = logging.getLogger("handoff.http")


def http_session() -> requests.Session:
    """One pooled session per thread (keep-alive to each system)."""
    s = getattr(_local, "session", None)
    if s is None:
        s = _local.session = requests.Session()
        s.trust_env = False  # no proxy/netrc lookups from the environment on every call (4 % of worker CPU)
        adapter = requests.adapters.HTTPAdapter(pool_connections=8, pool_maxsize=16, max_retries=0)
        s.mount("http://", adapter)
        s.mount("https://", adapter)
    return s


class DownstreamError(Exception):
    def __init__(self, message: str, *, permanent: bool, system: str = "", status: int | None = None,
                 field: str = "", retry_after: float | None = None, code: str = ""):
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.system = system
        self.status = status
        self.field = field
        self.retry_after = retry_after
        self.code = code


class AttemptRecorder(Protocol):
    def start(self, *, system: str, method: str, url: str, summary: str) -> Any: ...

    def finish(self, handle: Any, *, status: int | None, excerpt: str, duration_ms: int, outcome: str) -> None: ...


@dataclass
class NullRecorder:
    def start(self, **kw):
        return None

    def finish(self, handle, **kw):
        return None


def elapsed_ms(t0: float) -> int:
    """Milliseconds since `time.monotonic()` was `t0`, rounded to the nearest ms: flooring would take ~0.5 ms off
    every call, and so off every Σ of durations (the benchmarks' "waiting on the systems")."""
    return round((time.monotonic() - t0) * 1000)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def segment(value) -> str:
    """One URL path segment, percent-encoded (`/` included), so an id from a callback such as `../Account/001…`
    stays one segment and cannot walk to another resource. `.` and `..` are encoded too: HTTP clients resolve
    them as dot-segments."""
    text = str(value)
    return text.replace(".", "%2E") if text in (".", "..") else quote(text, safe="")


def path(prefix: str, *segments) -> str:
    """A URL path: the connector's fixed `prefix`, then each segment encoded on its own (`segment`):
    `path("/services/data", API_VERSION, "sobjects", "Account", account_id)`."""
    return "/".join([prefix.rstrip("/"), *(segment(s) for s in segments)])


class BaseClient:
    """A REST client for one connection. Subclasses set `system` and say how the vendor reports errors."""

    system = ""
    ok_statuses = (200, 201, 202, 204)

    def __init__(self, connection, recorder: AttemptRecorder | None = None):
        self.connection = connection
        self.base_url = connection.base_url.rstrip("/")
        self.recorder = recorder or NullRecorder()

    def auth_headers(self) -> dict[str, str]:
        token = self.connection.credentials.get("access_token", "")
        return {"Authorization": f"Bearer {token}"}

    def error_detail(self, response: requests.Response) -> tuple[str, str, str]:
        """(message, field, code) from the vendor's error body."""
        return (response.text[:500], "", "")

    def request(self, method: str, path: str, *, json_body: Any = None, params: dict | None = None,
                summary: str = "", not_found_ok: bool = False) -> requests.Response:
        url = f"{self.base_url}{path}"
        body = None if json_body is None else json.dumps(json_body, default=str)
        handle = self.recorder.start(system=self.system, method=method, url=path,
                                     summary=summary or (body[:500] if body else ""))
        t0 = time.monotonic()
        headers = {**self.auth_headers(), "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            resp = http_session().request(method, url, data=body, params=params, headers=headers,
                                          timeout=settings.HANDOFF_HTTP_TIMEOUT)
        except requests.RequestException as exc:
            ms = elapsed_ms(t0)
            kind = "timed out" if isinstance(exc, requests.Timeout) else "could not be reached"
            log.info("%s %s %s: %s after %d ms", self.system, method, path, kind, ms, extra={
                "system": self.system, "http_method": method, "path": path, "status": None, "duration_ms": ms})
            self.recorder.finish(handle, status=None, excerpt=str(exc)[:500], duration_ms=ms, outcome="transient")
            raise DownstreamError(f"{self.connection.name} {kind}", permanent=False, system=self.system) from exc
        ms = elapsed_ms(t0)
        log.info("%s %s %s -> %s in %d ms", self.system, method, path, resp.status_code, ms, extra={
            "system": self.system, "http_method": method, "path": path, "status": resp.status_code, "duration_ms": ms})
        excerpt = resp.text[:1000]
        if resp.status_code in self.ok_statuses or (not_found_ok and resp.status_code == 404):
            self.recorder.finish(handle, status=resp.status_code, excerpt=excerpt, duration_ms=ms, outcome="ok")
            return resp
        message, field, code = self.error_detail(resp)
        transient = resp.status_code in (408, 429) or resp.status_code >= 500
        self.recorder.finish(handle, status=resp.status_code, excerpt=excerpt, duration_ms=ms,
                             outcome="transient" if transient else "permanent")
        raise DownstreamError(
            message or f"{self.connection.name} answered {resp.status_code}",
            permanent=not transient, system=self.system, status=resp.status_code, field=field, code=code,
            retry_after=parse_retry_after(resp.headers.get("Retry-After")),
        )


class DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(f"the key {key[:60]!r} appears twice in one object")
        out[key] = value
    return out


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def exact_json(text: str):
    """JSON as the text says it, or ValueError: numbers with a fraction or exponent are Decimal (money never goes
    through float, and `1e400` is not infinity), integers stay exact ints, the non-JSON constants NaN / Infinity
    (which Python's json accepts) are refused, and so is an object with the same key twice (the last value would
    silently win)."""
    return json.loads(text, parse_float=Decimal, parse_constant=_no_constant, object_pairs_hook=_no_duplicate_keys)


def safe_json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
