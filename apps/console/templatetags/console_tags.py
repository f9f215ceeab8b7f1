"""Showing a record's text to a user who may not see personal data (the viewer role): the record's own tax ids
are masked wherever they appear — in Handoff's message, the other system's message, call excerpts, diffs and
the audit trail."""

from __future__ import annotations

from django import template

from apps.sync.workflows.quote_to_project import get_path

register = template.Library()

PERSONAL_PATHS = ("account.tax_id",)
MASK = "•••"


def personal_values(record) -> list[str]:
    values = set()
    for payload in (record.original_payload, record.current_payload):
        for path in PERSONAL_PATHS:
            value = get_path(payload or {}, path)
            if isinstance(value, str) and len(value.strip()) >= 3:
                values.add(value.strip())
    return sorted(values, key=len, reverse=True)


@register.simple_tag(takes_context=True)
def shown(context, record, value):
    """`value` (text, or anything printable) as the current user may see it. Escaped like any variable."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is not None and user.has_perm("sync.view_personal_data"):
        return text
    for secret in personal_values(record):
        text = text.replace(secret, MASK)
    return text


@register.filter
def split(value: str, sep: str = " ") -> list[str]:
    return value.split(sep)
