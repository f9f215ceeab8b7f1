"""Showing a record's text to a user who may not see personal data (the viewer role): the record's own tax ids
and consultants' names are masked wherever they appear — in its title, Handoff's message, the other system's
message, call excerpts, diffs and the audit trail — and search does not match on them (a hit would confirm
what the mask hides)."""

from __future__ import annotations

from django import template
from django.db.models import Q, TextField, Value
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce, Length, StrIndex, Upper
from django.db.models.lookups import Contains, GreaterThan, GreaterThanOrEqual

from apps.sync.workflows.quote_to_project import get_path

register = template.Library()

PERSONAL_PATHS = ("account.tax_id", "person")  # person: the consultant on a time entry or expense
MASK = "•••"


def personal_values(record) -> list[str]:
    values = set()
    for payload in (record.original_payload, record.current_payload):
        for path in PERSONAL_PATHS:
            value = get_path(payload or {}, path)
            if isinstance(value, str) and len(value.strip()) >= 3:
                values.add(value.strip())
    return sorted(values, key=len, reverse=True)


def may_see_personal(user) -> bool:
    return user is not None and user.has_perm("sync.view_personal_data")


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


@register.simple_tag(takes_context=True)
def shown(context, record, value):
    """`value` (text, or anything printable) as the current user may see it. Escaped like any variable."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    request = context.get("request")
    user = getattr(request, "user", None)
    if may_see_personal(user):
        return text
    for secret in personal_values(record):
        text = text.replace(secret, MASK)
    return text


@register.filter
def split(value: str, sep: str = " ") -> list[str]:
    return value.split(sep)
