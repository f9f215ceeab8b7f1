"""The defaults DOMAIN.md names (admins edit them afterwards). Used by the data migration, so it only touches
the model classes it is given (historical models inside a migration)."""

from __future__ import annotations

from datetime import time

BUSINESS_DAY = 8 * 60  # business minutes in one day of the default 09:00–17:00 calendar

DEFAULT_CALENDAR = dict(name="Default (Mon–Fri 09:00–17:00 UTC)", timezone="UTC", work_start=time(9, 0),
                        work_end=time(17, 0), working_weekdays=[0, 1, 2, 3, 4], is_default=True,
                        description="Used for records without a legal entity, or whose legal entity has no calendar.")

# (name, kind, workflow, stage, priority, minutes, business_time)
DEFAULT_POLICIES = [
    ("Closed-won → project created in PSA", "flow", "quote_to_project", "psa_project", 0, 4 * 60, True),
    ("Approved time → invoiced", "flow", "time_to_billing", "", 0, 2 * BUSINESS_DAY, True),
    ("Milestone completed → invoiced", "flow", "milestone_to_invoice", "", 0, BUSINESS_DAY, True),
    ("Invoice posted → visible in CRM", "flow", "invoice_payment_to_crm", "", 0, 60, False),
    ("Exception P1 resolved", "exception", "", "", 1, 4 * 60, False),
    ("Exception P2 resolved", "exception", "", "", 2, BUSINESS_DAY, True),
    ("Exception P3 resolved", "exception", "", "", 3, 3 * BUSINESS_DAY, True),
]

# what the integration admin may do in the SLA admin (DOMAIN.md: admins configure SLA policies)
INTEGRATION_ADMIN_PERMS = [
    "add_slapolicy", "change_slapolicy", "view_slapolicy",
    "add_businesscalendar", "change_businesscalendar", "view_businesscalendar",
    "add_holiday", "change_holiday", "view_holiday", "delete_holiday",
    "add_entitycalendar", "change_entitycalendar", "view_entitycalendar",
]


def install_defaults(BusinessCalendar, SlaPolicy) -> None:
    """Idempotent: creates what is missing, never overwrites what an admin changed."""
    if not BusinessCalendar.objects.filter(is_default=True).exists():
        BusinessCalendar.objects.get_or_create(name=DEFAULT_CALENDAR["name"], defaults=DEFAULT_CALENDAR)
    for name, kind, workflow, stage, priority, minutes, business in DEFAULT_POLICIES:
        SlaPolicy.objects.get_or_create(
            kind=kind, workflow=workflow, stage=stage, priority=priority, active=True,
            defaults=dict(name=name, duration_minutes=minutes, business_time=business, due_soon_percent=75))
