"""{% forecast_status as forecast %}: the last forecast refresh and the forecast's staleness, for the board."""

from django import template

from apps.forecast import services

register = template.Library()


@register.simple_tag(takes_context=True)
def forecast_status(context):
    request = context.get("request")
    status = services.board_status()
    status.can_refresh = services.can_refresh(getattr(request, "user", None))
    return status
