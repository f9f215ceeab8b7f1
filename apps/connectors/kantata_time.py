"""Kantata callbacks for approved time and expenses → the time_to_billing workflow (registered in
kantata_inbound.PARSERS).

Event types: `time_entry.approved`, `time_entry.updated` (a correction or re-approval after approval),
`time_entry.unapproved` and `time_entry.deleted` (withdraw the posted line); `expense.approved`, `expense.updated`,
`expense.unapproved`, `expense.deleted`. An `approved`/`updated` event whose object is not approved is stored as
ignored (there is nothing to bill until it is).

`data` is the object as Kantata's API v1 returns it:
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
"""

from __future__ import annotations

from datetime import date, datetime, timezone as dt_tz
from decimal import Decimal

from apps.finance.money import exponent

from . import kantata_inbound
from .inbound import EventSpec, Rejected

WORKFLOW = "time_to_billing"
TIME_EVENTS = {"time_entry.approved": "post", "time_entry.updated": "post", "time_entry.unapproved": "reverse",
               "time_entry.deleted": "reverse"}
EXPENSE_EVENTS = {"expense.approved": "post", "expense.updated": "post", "expense.unapproved": "reverse",
                  "expense.deleted": "reverse"}


def utc_text(value) -> str | None:
    """An ISO-8601 time as UTC text with a fixed shape (YYYY-MM-DDTHH:MM:SS.ffffffZ), or None."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=dt_tz.utc)
    return dt.astimezone(dt_tz.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _id(data: dict, key: str, what: str, *, required: bool = True) -> str:
    value = data.get(key)
    if value is None or isinstance(value, bool) or str(value).strip() == "":
        if required:
            raise Rejected(400, f"Kantata {what}: {key} is required")
        return ""
    text = str(value).strip()
    if len(text) > 64:
        raise Rejected(400, f"Kantata {what}: {key} is longer than 64 characters")
    return text


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
    stamps = [utc_text(data.get("updated_at"))]
    if action == "reverse" or stamps[0] is None:
        stamps += [utc_text(data.get("deleted_at")), utc_text(envelope.get("timestamp"))]
    stamps = [s for s in stamps if s]
    if not stamps:
        raise Rejected(400, f"Kantata {what}: updated_at (or the event's timestamp) must be an ISO-8601 time")
    return max(stamps)


def _spec(conn, event_id: str, envelope: dict, payload: dict, key: str) -> EventSpec:
    from apps.finance.billable import entry_title

    return EventSpec(event_id=event_id, event_type=envelope["type"], body=envelope, workflow=WORKFLOW,
                     source_key=f"{key}:{payload['entry_id']}", title=entry_title(payload)[:300], payload=payload)


def parse_time_entry(conn, event_id: str, envelope: dict) -> EventSpec:
    data, etype = envelope["data"], envelope["type"]
    action = TIME_EVENTS[etype]
    what = "time entry"
    payload = {"entry_type": "time", "action": action, "event_type": etype, "entry_id": _id(data, "id", what),
               "source_modified_at": _modified(envelope, data, action, what)}
    if action == "post":
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
            "psa_rate": str(Decimal(rate_cents).scaleb(-exponent(currency or "USD")))
            if isinstance(rate_cents, int) and not isinstance(rate_cents, bool) else "",
            "currency": currency,
            "notes": _text(data, "notes", 1000),
            "approved_at": utc_text(data.get("approved_at")) or payload["source_modified_at"],
            "engagement_code": "",
            "cap_decision": "",
        })
    return _spec(conn, event_id, envelope, payload, "time_entry")


def parse_expense(conn, event_id: str, envelope: dict) -> EventSpec:
    data, etype = envelope["data"], envelope["type"]
    action = EXPENSE_EVENTS[etype]
    what = "expense"
    payload = {"entry_type": "expense", "action": action, "event_type": etype, "entry_id": _id(data, "id", what),
               "source_modified_at": _modified(envelope, data, action, what)}
    if action == "post":
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
            "amount": str(Decimal(cents).scaleb(-exponent(currency))),
            "currency": currency,
            "billable": _flag(data, "billable", what),
            "notes": _text(data, "notes", 1000),
            "approved_at": utc_text(data.get("approved_at")) or payload["source_modified_at"],
            "engagement_code": "",
            "cap_decision": "",
        })
    return _spec(conn, event_id, envelope, payload, "expense")


for _type in TIME_EVENTS:
    kantata_inbound.PARSERS[_type] = parse_time_entry
for _type in EXPENSE_EVENTS:
    kantata_inbound.PARSERS[_type] = parse_expense
