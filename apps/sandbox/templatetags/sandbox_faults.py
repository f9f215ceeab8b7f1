"""{% sandbox_fault_form connection bound as form %}: the fault-injection form of a connection's sandbox, or None
when the sandboxes are off (fault_panel.fault_form)."""

from django import template

from ..fault_panel import fault_form

register = template.Library()


@register.simple_tag
def sandbox_fault_form(connection, bound=None):
    return fault_form(connection, bound)
