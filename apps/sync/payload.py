"""Reading and changing a record's payload by canonical field path ("account.tax_id"), as the fix form, the
bulk fix, the personal-data mask and the API name fields (their words: workflows.catalog.field_label)."""

from __future__ import annotations

import re


def get_path(payload: dict, path: str):
    """The value at a dotted path; None when any part of it is missing."""
    cur = payload
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def set_path(payload: dict, path: str, value) -> None:
    """Set the value at a dotted path, creating the objects on the way."""
    parts = path.split(".")
    cur = payload
    for part in parts[:-1]:
        cur = cur.setdefault(part, {})
    cur[parts[-1]] = value


def normalise_fix(field_name: str, value: str):
    """Clean a value typed into the fix form the same way the CRM mapping cleans it, so a fix compares equal to
    the same value arriving from the CRM."""
    value = (value or "").strip()
    if field_name in ("currency", "account.country"):
        return value.upper()
    if field_name == "account.tax_id":
        return re.sub(r"\s+", "", value)
    return value

