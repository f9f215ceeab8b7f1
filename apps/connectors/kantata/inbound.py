"""Kantata (PSA) callbacks: approved time entries and expenses, completed milestones — verified per Standard
Webhooks, checked and parsed. Every refusal of a Kantata callback is made here (signature, JSON and envelope by
the shared apps/connectors/standard_webhooks/signature.verified_message).

One message per request (apps/connectors/standard_webhooks/signature.py verifies its signature and envelope):

    POST /api/v1/callbacks/kantata/
    webhook-id: evt_…   webhook-timestamp: 1700000000   webhook-signature: v1,…
    {"type": "time_entry.approved", "timestamp": "2026-11-02T10:00:00Z", "data": { …the Kantata object… }}

`data` is the object as Kantata's API v1 returns it (time_entries, expenses, stories). The webhook-id is the
event id (the same on every retry, so a redelivery is stored once). PARSERS says which parser turns each event
type into an EventSpec; a type no parser reads is stored as ignored.

Time and expenses → time_to_billing. Event types: `time_entry.approved`, `time_entry.updated` (a correction or
re-approval after approval), `time_entry.unapproved` and `time_entry.deleted` (withdraw the posted line);
`expense.approved`, `expense.updated`, `expense.unapproved`, `expense.deleted`. An `approved`/`updated` event
whose object is not approved is stored as ignored (there is nothing to bill until it is).
- time_entries: id, workspace_id, story_id, user_id, date_performed, time_in_minutes, billable, rate_in_cents,
  approved, notes, updated_at (+ created_at, approved_at when present);
- expenses: id, workspace_id, user_id, date, category, amount_in_cents (in the currency's minor unit), currency,
  billable, notes, updated_at.
Fields the firm's Kantata carries for Handoff (custom fields exposed on the object, all optional):
- `role_name`: the person's rate-card role on the project (time);
- `service_code`: the PSA service code that maps to ERP dimensions (time and expenses);
- `write_off_minutes`: minutes written off by the project manager at approval (time; default 0);
- `task_billable`: false when the story (task) is non-billable (time; default true);
- `story_title`: the task's name (time), `user_name`: the person's name, `currency`: the project's currency
  that rate_in_cents is in (time; used only to show an estimate while the entry is held).
A deleted object may carry only its id.
One record per entry: source_key `time_entry:<id>` / `expense:<id>`. `source_modified_at` = the object's
`updated_at` in UTC (normalised to one text format, so that text order is time order); for an unapproval or
deletion the latest of updated_at, deleted_at and the event's timestamp, so that the withdrawal is newer than
the approval it undoes. A newer version re-runs an already-posted entry (the workflow sets reopen_on_update) and
updates the same ERP line; an older one changes nothing.

Milestones → milestone_to_invoice. Kantata models milestones as stories (`story_type: "milestone"`) of a
workspace (the project); a `story.completed` callback carries the story as `GET /api/v1/stories/<id>.json`
returns it:

    {"id": "9001", "workspace_id": "4711", "title": "Phase 1 sign-off", "story_type": "milestone",
     "state": "completed", "price": "25000.00" | "budget_estimate_in_cents": 2500000, "currency": "USD",
     "due_date": "2026-11-30", "completed_at": "2026-11-20T16:00:00Z", "updated_at": "2026-11-20T16:00:05Z"}

Stories of another type, or not completed, are stored as ignored. One record per story (`story:<id>`);
`updated_at` orders deliveries of the same story.
"""

from __future__ import annotations

from datetime import date

from apps.connectors import ids
from apps.connectors.callbacks import EventSpec, Rejected, checked_id
from apps.connectors.standard_webhooks import signature
from apps.finance.billable import EXPENSE, REVERSE, TIME, entry_title
from apps.finance.invoicing import parse_time, utc_text

from .mapping import POST, minor_to_decimal, story_amount

WORKFLOW = "time_to_billing"
TIME_EVENTS = {"time_entry.approved": POST, "time_entry.updated": POST, "time_entry.unapproved": REVERSE,
               "time_entry.deleted": REVERSE}
EXPENSE_EVENTS = {"expense.approved": POST, "expense.updated": POST, "expense.unapproved": REVERSE,
                  "expense.deleted": REVERSE}


def verify_and_parse(conn, *, method: str, uris: list[str], body: bytes, headers) -> list[EventSpec]:
    event_id, envelope = signature.verified_message(conn, headers=headers, body=body, who="Kantata",
                                                    what="a Kantata event")
    parser = PARSERS.get(envelope["type"])
    if parser is None:
        return [EventSpec(event_id=event_id, event_type=envelope["type"][:100], body=envelope,
                          ignored=f"no workflow acts on Kantata {envelope['type'][:100]!r} events")]
    return [parser(conn, event_id, envelope)]


def _utc(value) -> str | None:
    """An ISO-8601 time (text only: Kantata sends no Unix times) as UTC text of a fixed shape, or None."""
    dt = parse_time(value) if isinstance(value, str) else None
    return utc_text(dt) if dt else None


def _id(data: dict, key: str, what: str, *, required: bool = True) -> str:
    value = data.get(key)
    if value is None or isinstance(value, bool) or str(value).strip() == "":
        if required:
            raise Rejected(400, f"Kantata {what}: {key} is required")
        return ""
    return checked_id(ids.kantata_id, value, key, f"Kantata {what}")


def _whole(data: dict, key: str, what: str, default: int | None = None) -> int:
    value = data.get(key, default)
    if value is None:
        raise Rejected(400, f"Kantata {what}: {key} is required")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Rejected(400, f"Kantata {what}: {key} must be a whole number ≥ 0, not {value!r}"[:200])
    return value


def _day(data: dict, key: str, what: str) -> str:
    value = data.get(key)
    try:
        return date.fromisoformat(value).isoformat()
    except (TypeError, ValueError):
        raise Rejected(400, f"Kantata {what}: {key} must be a date (YYYY-MM-DD), not {value!r}"[:200])


def _flag(data: dict, key: str, what: str, default: bool = True) -> bool:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise Rejected(400, f"Kantata {what}: {key} must be true or false")
    return value


def _text(data: dict, key: str, limit: int = 300) -> str:
    value = data.get(key)
    return "" if value is None else str(value).strip()[:limit]


def _modified(envelope: dict, data: dict, action: str, what: str) -> str:
    stamps = [_utc(data.get("updated_at"))]
    if action == REVERSE or stamps[0] is None:
        stamps += [_utc(data.get("deleted_at")), _utc(envelope.get("timestamp"))]
    stamps = [s for s in stamps if s]
    if not stamps:
        raise Rejected(400, f"Kantata {what}: updated_at (or the event's timestamp) must be an ISO-8601 time")
    return max(stamps)


def _spec(conn, event_id: str, envelope: dict, payload: dict, key: str) -> EventSpec:
    return EventSpec(event_id=event_id, event_type=envelope["type"], body=envelope, workflow=WORKFLOW,
                     source_key=f"{key}:{payload['entry_id']}", title=entry_title(payload)[:300], payload=payload)


def parse_time_entry(conn, event_id: str, envelope: dict) -> EventSpec:
    data, etype = envelope["data"], envelope["type"]
    action = TIME_EVENTS[etype]
    what = "time entry"
    payload = {"entry_type": TIME, "action": action, "event_type": etype, "entry_id": _id(data, "id", what),
               "source_modified_at": _modified(envelope, data, action, what)}
    if action == POST:
        if data.get("approved") is False:
            return EventSpec(event_id=event_id, event_type=etype, body=envelope,
                             ignored=f"time entry {payload['entry_id']} is not approved: nothing to bill yet")
        rate_cents = data.get("rate_in_cents")
        currency = _text(data, "currency", 3).upper()
        payload.update({
            "workspace_id": _id(data, "workspace_id", what),
            "story_id": _id(data, "story_id", what, required=False),
            "task": _text(data, "story_title", 200),
            "task_billable": _flag(data, "task_billable", what),
            "user_id": _id(data, "user_id", what, required=False),
            "person": _text(data, "user_name", 200),
            "role": _text(data, "role_name", 100),
            "service_code": _text(data, "service_code", 64),
            "date": _day(data, "date_performed", what),
            "minutes": _whole(data, "time_in_minutes", what),
            "write_off_minutes": str(_whole(data, "write_off_minutes", what, default=0)),
            "billable": _flag(data, "billable", what),
            "psa_rate": minor_to_decimal(rate_cents, currency)
            if isinstance(rate_cents, int) and not isinstance(rate_cents, bool) else "",
            "currency": currency,
            "notes": _text(data, "notes", 1000),
            "approved_at": _utc(data.get("approved_at")) or payload["source_modified_at"],
            "engagement_code": "",
            "cap_decision": "",
        })
    return _spec(conn, event_id, envelope, payload, "time_entry")


def parse_expense(conn, event_id: str, envelope: dict) -> EventSpec:
    data, etype = envelope["data"], envelope["type"]
    action = EXPENSE_EVENTS[etype]
    what = "expense"
    payload = {"entry_type": EXPENSE, "action": action, "event_type": etype, "entry_id": _id(data, "id", what),
               "source_modified_at": _modified(envelope, data, action, what)}
    if action == POST:
        if data.get("approved") is False:
            return EventSpec(event_id=event_id, event_type=etype, body=envelope,
                             ignored=f"expense {payload['entry_id']} is not approved: nothing to bill yet")
        currency = _text(data, "currency").upper()
        if len(currency) != 3 or not currency.isalpha():
            raise Rejected(400, f"Kantata expense: currency must be an ISO-4217 code, not {data.get('currency')!r}"
                           [:200])
        cents = _whole(data, "amount_in_cents", what)
        payload.update({
            "workspace_id": _id(data, "workspace_id", what),
            "user_id": _id(data, "user_id", what, required=False),
            "person": _text(data, "user_name", 200),
            "category": _text(data, "category", 100),
            "service_code": _text(data, "service_code", 64),
            "date": _day(data, "date", what),
            "amount": minor_to_decimal(cents, currency),
            "currency": currency,
            "billable": _flag(data, "billable", what),
            "notes": _text(data, "notes", 1000),
            "approved_at": _utc(data.get("approved_at")) or payload["source_modified_at"],
            "engagement_code": "",
            "cap_decision": "",
        })
    return _spec(conn, event_id, envelope, payload, "expense")


def parse_story_completed(conn, event_id: str, envelope: dict) -> EventSpec:
    data = envelope["data"]
    if data.get("id") in (None, ""):
        raise Rejected(400, "a Kantata story.completed event needs the story's id")
    story_id = checked_id(ids.kantata_id, data["id"], "id", "Kantata story")
    spec = EventSpec(event_id=event_id, event_type="story.completed", body=envelope)
    if data.get("story_type") != "milestone":
        spec.ignored = f"story {story_id} is a {data.get('story_type') or 'story'}, not a milestone"
        return spec
    if data.get("state") != "completed":
        spec.ignored = f"milestone {story_id} is {data.get('state') or 'not completed'}, not completed"
        return spec
    if data.get("workspace_id") in (None, ""):
        raise Rejected(400, f"milestone {story_id} has no workspace_id (its project)")
    workspace = checked_id(ids.kantata_id, data["workspace_id"], "workspace_id", f"Kantata milestone {story_id}")
    currency = str(data.get("currency") or "").strip().upper()[:3]
    modified = parse_time(data.get("updated_at")) or parse_time(data.get("completed_at")) \
        or parse_time(envelope.get("timestamp"))
    title = str(data.get("title") or f"Milestone {story_id}")[:200]
    spec.workflow = "milestone_to_invoice"
    spec.source_key = f"story:{story_id}"
    spec.title = title
    spec.payload = {
        "story_id": story_id,
        "workspace_id": workspace,
        "title": title,
        "amount": story_amount(data, currency),
        "currency": currency,
        "due_date": str(data.get("due_date") or "")[:10],
        "completed_at": utc_text(parse_time(data.get("completed_at"))) if parse_time(data.get("completed_at")) else "",
        "source_modified_at": utc_text(modified) if modified else "",
    }
    return spec


# event type → parse(connection, event_id, envelope) -> EventSpec (raises Rejected(400, why) for a bad object)
PARSERS = {
    **{etype: parse_time_entry for etype in TIME_EVENTS},
    **{etype: parse_expense for etype in EXPENSE_EVENTS},
    "story.completed": parse_story_completed,
}
