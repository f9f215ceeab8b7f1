"""NetSuite time bills (`timebill`, Track Time) and SuiteBilling charges (`charge`), upserted by external id at
`PUT /services/rest/record/v1/<type>/eid:<externalId>` and read back with GET (views.py). They are validated as
NetSuite would: required fields, H:MM durations, charge stages, a service item on billable lines, and reference
keys that must exist — the project (job) billed, and the department, class, location, subsidiary and item,
checked against the sandbox account's segments (reference.py). A refusal is a 400 whose `o:errorDetails` names
the field (`o:errorPath`), e.g. "Invalid department reference key 999.".
"""

from __future__ import annotations

import re
from datetime import date

from ..models import SandboxObject
from .reference import SEGMENTS

CHARGE_STAGES = ("HOLD_FOR_BILLING", "NON_BILLABLE", "READY_FOR_BILLING", "PROCESSED")
DURATION = re.compile(r"(\d{1,2}):([0-5]\d)")
AMOUNT = re.compile(r"-?\d{1,13}(\.\d{1,8})?")


def _ref_key(data: dict, key: str) -> str:
    ref = data.get(key)
    if not isinstance(ref, dict):
        return ""
    return str(ref.get("id") or ref.get("externalId") or "").strip()


def _required(data: dict, fields: list[tuple[str, str]]):
    for key, label in fields:
        value = data.get(key)
        if value in (None, "", {}) or (isinstance(value, dict) and not _ref_key(data, key)):
            return f"Please enter value(s) for: {label}", key
    return None


def _segments(data: dict, keys: tuple[str, ...]):
    for key in keys:
        if key not in data or data[key] is None:
            continue
        rid = str((data[key] or {}).get("id", "")) if isinstance(data[key], dict) else str(data[key])
        if rid not in SEGMENTS["item" if key == "billingItem" else key]:
            return f"Invalid {key} reference key {rid}.", key
    return None


def _project_exists(data: dict, key: str) -> bool:
    ref = data.get(key) or {}
    qs = SandboxObject.objects.filter(system="netsuite", object_type="job")
    if ref.get("id"):
        return str(ref["id"]).isdigit() and qs.filter(pk=int(ref["id"])).exists()
    return qs.filter(external_key=str(ref.get("externalId", ""))).exists()


def _date(data: dict, key: str):
    try:
        date.fromisoformat(str(data.get(key)))
    except ValueError:
        return f"Invalid date value for {key}: {data.get(key)!r} (use YYYY-MM-DD).", key
    return None


def validate_timebill(data: dict):
    """NetSuite's checks on a time bill (Track Time) record."""
    problem = _required(data, [("tranDate", "Date"), ("employee", "Employee"), ("customer", "Customer:Project"),
                               ("hours", "Duration"), ("subsidiary", "Subsidiary")]) or _date(data, "tranDate")
    if problem:
        return problem
    m = DURATION.fullmatch(str(data["hours"]))
    if not m or int(m.group(1)) * 60 + int(m.group(2)) > 24 * 60:
        return f"Invalid duration {data['hours']!r}: use H:MM, at most 24:00.", "hours"
    if data.get("isBillable"):
        if not _ref_key(data, "item"):
            return "Please enter value(s) for: Service Item", "item"
        if not AMOUNT.fullmatch(str(data.get("rate", ""))) or str(data.get("rate", "")).startswith("-"):
            return f"Invalid rate {data.get('rate')!r}.", "rate"
    problem = _segments(data, ("subsidiary", "department", "class", "location", "item"))
    if problem:
        return problem
    if not _project_exists(data, "customer"):
        return f"Invalid customer reference key {_ref_key(data, 'customer')}.", "customer"
    return None


def validate_charge(data: dict):
    """NetSuite's checks on a SuiteBilling charge."""
    problem = _required(data, [("billTo", "Bill To"), ("chargeDate", "Charge Date"), ("stage", "Stage"),
                               ("amount", "Amount"), ("subsidiary", "Subsidiary")]) or _date(data, "chargeDate")
    if problem:
        return problem
    if data["stage"] not in CHARGE_STAGES:
        return f"Invalid stage {data['stage']!r}: use one of {', '.join(CHARGE_STAGES)}.", "stage"
    if not AMOUNT.fullmatch(str(data["amount"])) or str(data["amount"]).startswith("-"):
        return f"Invalid amount {data['amount']!r}.", "amount"
    if data["stage"] == "READY_FOR_BILLING" and not _ref_key(data, "billingItem"):
        return "Please enter value(s) for: Billing Item", "billingItem"
    problem = _segments(data, ("subsidiary", "department", "class", "location", "billingItem"))
    if problem:
        return problem
    if not _project_exists(data, "billTo"):
        return f"Invalid billTo reference key {_ref_key(data, 'billTo')}.", "billTo"
    return None
