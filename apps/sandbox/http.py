"""What every sandbox view shares: the view decorator (fault injection's lost responses) and the JSON and time
helpers of the vendors' REST APIs.

The sandboxes are mounted at /sandbox/<system>/… when HANDOFF_SANDBOX_ENABLED (demo and tests; never in
production): apps/sandbox/urls.py.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime, timezone as dt_tz

from django.contrib.auth.decorators import login_not_required
from django.views.decorators.csrf import csrf_exempt

from .faults import hang


def read_json(request):
    """(body, None), or (None, the vendors' message) when the body is not JSON."""
    try:
        return json.loads(request.body or b"{}"), None
    except ValueError:
        return None, "Malformed JSON body"


def iso(dt: datetime | None = None) -> str:
    """ISO 8601 in UTC with a Z, as HubSpot and Kantata write their timestamps (now when no `dt`)."""
    return (dt or datetime.now(dt_tz.utc)).astimezone(dt_tz.utc).isoformat().replace("+00:00", "Z")


def now_text() -> str:
    """NetSuite's timestamp format (fractional seconds and a Z), also used for the signed callbacks' timestamps."""
    return datetime.now(dt_tz.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sandbox_view(fn):
    """A vendor's endpoint: no login or CSRF (the vendor's own auth is checked by faults.check), and a lost
    response (faults.check) hangs after the view has run, so the work is done and committed but the answer
    comes too late."""

    @functools.wraps(fn)
    def view(request, *args, **kwargs):
        response = fn(request, *args, **kwargs)
        lose = getattr(request, "sandbox_lose_response", None)
        if lose:
            hang(lose)
        return response

    return csrf_exempt(login_not_required(view))
