"""Template tags of the console: a record's text as the current user may see it (the rule: apps/sync/privacy.py)."""

from __future__ import annotations

from django import template

from apps.sync.privacy import masked, may_see_personal_data

register = template.Library()


@register.simple_tag(takes_context=True)
def shown(context, record, value):
    """`value` (text, or anything printable) as the current user may see it. Escaped like any variable."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    request = context.get("request")
    user = getattr(request, "user", None)
    return text if may_see_personal_data(user) else masked(text, record)
