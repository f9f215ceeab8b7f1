"""Kantata milestones: a `story.completed` callback for a story of type "milestone" starts milestone-to-invoice.

Kantata models milestones as stories (`story_type: "milestone"`) of a workspace (the project). The callback's
`data` is the story as `GET /api/v1/stories/<id>.json` returns it:

    {"id": "9001", "workspace_id": "4711", "title": "Phase 1 sign-off", "story_type": "milestone",
     "state": "completed", "price": "25000.00" | "budget_estimate_in_cents": 2500000, "currency": "USD",
     "due_date": "2026-11-30", "completed_at": "2026-11-20T16:00:00Z", "updated_at": "2026-11-20T16:00:05Z"}

The amount is `price` (a decimal string) when given, else `budget_estimate_in_cents` read as minor units of the
currency. Stories of another type, or not completed, are stored as ignored. One record per story
(`story:<id>`); `updated_at` orders deliveries of the same story.
"""

from __future__ import annotations

from decimal import Decimal

from apps.finance.invoicing import parse_time, utc_text
from apps.finance.money import MoneyError, exponent, to_decimal

from .inbound import EventSpec, Rejected
from .kantata_inbound import PARSERS


def story_amount(data: dict, currency: str) -> str:
    """The milestone's amount as decimal text ("" when the story carries none we can read)."""
    price = data.get("price")
    try:
        if price not in (None, ""):
            return str(to_decimal(price, "price"))
        cents = data.get("budget_estimate_in_cents")
        if cents in (None, "") or isinstance(cents, bool):
            return ""
        minor = to_decimal(cents, "budget_estimate_in_cents")
        if minor != minor.to_integral_value():
            return ""
        return str(Decimal(int(minor)).scaleb(-exponent(currency or "USD")))
    except MoneyError:
        return ""


def parse_story_completed(conn, event_id: str, envelope: dict) -> EventSpec:
    data = envelope["data"]
    story_id = data.get("id")
    if not isinstance(story_id, (str, int)) or isinstance(story_id, bool) or not str(story_id).strip():
        raise Rejected(400, "a Kantata story.completed event needs the story's id")
    story_id = str(story_id).strip()[:64]
    spec = EventSpec(event_id=event_id, event_type="story.completed", body=envelope)
    if data.get("story_type") != "milestone":
        spec.ignored = f"story {story_id} is a {data.get('story_type') or 'story'}, not a milestone"
        return spec
    if data.get("state") != "completed":
        spec.ignored = f"milestone {story_id} is {data.get('state') or 'not completed'}, not completed"
        return spec
    workspace = data.get("workspace_id")
    if not isinstance(workspace, (str, int)) or isinstance(workspace, bool) or not str(workspace).strip():
        raise Rejected(400, f"milestone {story_id} has no workspace_id (its project)")
    currency = str(data.get("currency") or "").strip().upper()[:3]
    modified = parse_time(data.get("updated_at")) or parse_time(data.get("completed_at")) \
        or parse_time(envelope.get("timestamp"))
    title = str(data.get("title") or f"Milestone {story_id}")[:200]
    spec.workflow = "milestone_to_invoice"
    spec.source_key = f"story:{story_id}"
    spec.title = title
    spec.payload = {
        "story_id": story_id,
        "workspace_id": str(workspace).strip()[:64],
        "title": title,
        "amount": story_amount(data, currency),
        "currency": currency,
        "due_date": str(data.get("due_date") or "")[:10],
        "completed_at": utc_text(parse_time(data.get("completed_at"))) if parse_time(data.get("completed_at")) else "",
        "source_modified_at": utc_text(modified) if modified else "",
    }
    return spec


PARSERS["story.completed"] = parse_story_completed
