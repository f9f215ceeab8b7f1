"""What every system's `inbound.py` shares: the refusal, the parsed event, and the JSON body checks.

Each `apps/connectors/<system>/inbound.py` exposes `verify_and_parse(conn, *, method, uris, body, headers)
-> list[EventSpec]`: it verifies the signature first (an unsigned request learns nothing about what we accept),
then checks and parses the body, and raises `Rejected(4xx, why)` for anything it refuses. The body's size is
checked once, by the intake, before any of them runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from apps.connectors.base import exact_json


class Rejected(Exception):
    """A callback refused with a 4xx status and a reason the sender (and the admin) can read."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class EventSpec:
    """One verified event parsed from a callback: what to store, and which record (if any) it starts."""

    event_id: str
    event_type: str
    body: object
    workflow: str = ""
    source_key: str = ""
    title: str = ""
    payload: dict = field(default_factory=dict)
    ignored: str = ""  # why no workflow acts on it (stored, answered 2xx, not an error)


def media_type(headers) -> str:
    """The Content-Type without its parameters, lower case ("" when absent)."""
    return (headers.get("Content-Type") or "").split(";")[0].strip().lower()


def json_body(body: bytes, headers, what: str):
    """The parsed JSON of a callback, or Rejected(415/400) saying what is wrong with it.

    `what` names the messages in the 415 reason, e.g. "HubSpot webhooks", "Kantata callbacks"."""
    if media_type(headers) != "application/json":
        raise Rejected(415, f"{what} must be sent as application/json")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected(400, "the body is not valid UTF-8")
    try:
        return exact_json(text)
    except (ValueError, RecursionError) as exc:  # DuplicateKey, NaN/Infinity and int-digit limits are ValueErrors
        raise Rejected(400, f"malformed JSON: {str(exc)[:200]}")


def signed_at(value: str, *, name: str, per_second: int, max_age: int, who: str) -> None:
    """Refuse (401) a signature's timestamp that is not a whole number (of seconds, or of 1/`per_second`) or is
    more than `max_age` seconds away from now, in either direction: one dated ahead is replayable later. Digits
    only, and at most 16 of them: a longer number is no time a sender signs at, and would overflow the float
    arithmetic of the comparison (a 500 instead of a refusal)."""
    text = (value or "").strip()
    unit = "seconds" if per_second == 1 else "milliseconds"
    if not (text.isascii() and text.isdigit() and len(text) <= 16):
        raise Rejected(401, f"{who}{name} is not a number of {unit}")
    offset = int(text) / per_second - time.time()
    if abs(offset) > max_age:
        when = f"{int(-offset)} s ago" if offset < 0 else f"{int(offset)} s ahead of now"
        raise Rejected(401, f"{who}stale timestamp: the request was signed {when} (limit {max_age} s either way)")


def checked_id(check, value, field: str, who: str) -> str:
    """`value` in its system's id format (apps/connectors/ids.py), or Rejected(400) naming the field."""
    try:
        return check(value)
    except ValueError as exc:
        raise Rejected(400, f"{who}: {field} {str(value)[:40]!r} {exc}")
