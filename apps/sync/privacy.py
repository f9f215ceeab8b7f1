"""The personal-data rule: a user without sync.view_personal_data (the viewer role) never sees a record's own
tax ids or consultants' names — in its title, Handoff's message, the other system's message, call excerpts, diffs, the audit trail or the API.
The console's template tag, the console's search and the read API all go through here: search must not match on
a masked value either (a hit would confirm what the mask hides)."""

from __future__ import annotations

from django.db.models import Q, TextField, Value
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce, Length, StrIndex, Upper
from django.db.models.lookups import Contains, GreaterThan, GreaterThanOrEqual

from .payload import get_path

PERSONAL_PATHS = ("account.tax_id", "person")  # person: the consultant on a time entry or expense
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


def personal_match(q: str) -> Q:
    """Records whose personal values contain the search text, or are contained in it (as personal_values
    reads them, upper-cased like the search): what a search must not match for a user who sees them masked."""
    key = q.strip().upper()
    text = Value(key, output_field=TextField())
    cond = Q(pk__in=[])
    for payload in ("original_payload", "current_payload"):
        for path in PERSONAL_PATHS:
            value = Upper(Coalesce(KT(f"{payload}__{path.replace('.', '__')}"), Value(""), output_field=TextField()))
            cond |= Q(Contains(value, key)) | (Q(GreaterThanOrEqual(Length(value), 3))
                                               & Q(GreaterThan(StrIndex(text, value), 0)))
    return cond
