"""NetSuite billing schedules (`billingSchedule`), upserted by external id (`PUT …/record/v1/billingSchedule/eid:<id>`)
and read back (views.py), validated as NetSuite would: a name, a known schedule type, and a frequency for every
type but milestone schedules.
"""

from __future__ import annotations

SCHEDULE_TYPES = ("STANDARD", "FIXED_BID_INTERVAL", "FIXED_BID_MILESTONE", "TIME_AND_MATERIAL")
FREQUENCIES = ("DAILY", "WEEKLY", "BIWEEKLY", "MONTHLY", "QUARTERLY", "SEMIANNUALLY", "ANNUALLY")


def _ref(data: dict, key: str) -> str:
    value = data.get(key)
    return str(value.get("id") or "").strip() if isinstance(value, dict) else ""


def validate_billing_schedule(data: dict):
    if not str(data.get("name") or "").strip():
        return ("Please enter value(s) for: Name", "name")
    if len(str(data["name"])) > 100:
        return ("Name: the value is longer than 100 characters.", "name")
    stype = _ref(data, "scheduleType")
    if not stype:
        return ("Please enter value(s) for: Schedule Type", "scheduleType")
    if stype not in SCHEDULE_TYPES:
        return (f"Invalid scheduleType reference key {stype}.", "scheduleType")
    freq = _ref(data, "frequency")
    if stype != "FIXED_BID_MILESTONE":
        if not freq:
            return ("Please enter value(s) for: Frequency", "frequency")
        if freq not in FREQUENCIES:
            return (f"Invalid frequency reference key {freq}.", "frequency")
    if "inArrears" in data and not isinstance(data["inArrears"], bool):
        return ("In Arrears must be true or false.", "inArrears")
    return None
