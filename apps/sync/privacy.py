"""The personal-data rule: a user without sync.view_personal_data (the viewer role) never sees a record's own
tax ids — in Handoff's message, the other system's message, call excerpts, diffs, the audit trail or the API.
The console's template tag and the read API both mask through here."""

from __future__ import annotations

from .payload import get_path

PERSONAL_PATHS = ("account.tax_id",)
MASK = "•••"


def personal_values(record) -> list[str]:
    """The record's personal values, longest first (so a value that contains another is masked whole)."""
    values = set()
    for payload in (record.original_payload, record.current_payload):
        for path in PERSONAL_PATHS:
            value = get_path(payload or {}, path)
            # shorter values would mask unrelated text that happens to contain them
            if isinstance(value, str) and len(value.strip()) >= 3:
                values.add(value.strip())
    return sorted(values, key=len, reverse=True)


def may_see_personal_data(user) -> bool:
    return user is not None and user.has_perm("sync.view_personal_data")


def masked(text: str, record) -> str:
    """`text` with the record's personal values replaced by MASK."""
    for secret in personal_values(record):
        text = text.replace(secret, MASK)
    return text
