"""Reading dates out of payloads, where they arrive as text typed or exported by other systems."""

from __future__ import annotations

from datetime import date


def parse_date(value, *, strict: bool = False) -> date | None:
    """The date of 'YYYY-MM-DD' (or of a timestamp that starts with one); None when empty.

    Text that is not a date is None too, unless `strict`: then ValueError, for rules that must tell a person
    their date is wrong rather than treat it as missing."""
    if value in (None, ""):
        return None
    try:
        return date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        if strict:
            raise
        return None
