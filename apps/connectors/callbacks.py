"""Shapes shared by the inbound (callback) side of the connectors."""

from __future__ import annotations

from dataclasses import dataclass, field


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


def json_body(body: bytes, headers, who: str):
    """The parsed JSON of a callback, or Rejected(415/400) saying what is wrong with it."""
    import json

    media = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if media != "application/json":
        raise Rejected(415, f"{who} callbacks must be sent as application/json")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected(400, "the body is not valid UTF-8")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise Rejected(400, f"malformed JSON: {str(exc)[:200]}")
