"""The four roles and the permissions their names promise (used by the data migration and the tests).

pmo / finance_ops: read the boards, queues and records, fix + resubmit + ignore + comment on + take held
records, see personal data.
integration_admin: all of that, plus connections, raw payloads, inbound events, runs, sandboxes, and resetting
someone's TOTP device.
viewer: read-only boards and records, no personal data, no raw payloads; cannot comment or be assigned records.
"""

VIEW_APPS = ["canonical", "sync", "finance", "forecast", "reconcile"]
WORKER_PERMS = ["sync.resubmit_syncrecord", "sync.ignore_syncrecord", "sync.view_personal_data"]
ADMIN_EXTRA = ["sync.view_raw_payload", "sync.add_connection", "sync.change_connection", "sync.view_connection",
               "sync.view_inboundevent", "sync.view_syncrun", "sync.change_syncrecord", "sandbox.view_sandboxsystem",
               "sandbox.change_sandboxsystem", "sandbox.view_sandboxobject"]
# apps/sla: admin-editable SLA policies and business calendars
ADMIN_EXTRA += ["sla.add_slapolicy", "sla.change_slapolicy", "sla.view_slapolicy",
                "sla.add_businesscalendar", "sla.change_businesscalendar", "sla.view_businesscalendar",
                "sla.add_holiday", "sla.change_holiday", "sla.view_holiday", "sla.delete_holiday",
                "sla.add_entitycalendar", "sla.change_entitycalendar", "sla.view_entitycalendar"]
# apps/core/two_factor.py: an admin resets someone's second factor by deleting their TOTP device (they enrol again)
ADMIN_EXTRA += ["otp_totp.view_totpdevice", "otp_totp.delete_totpdevice"]
# apps/finance: the money policies and reference data finance owns (tolerance, markup, rates, ERP dimensions)
FINANCE_EXTRA = ["finance.change_financepolicy", "finance.add_exchangerate", "finance.change_exchangerate",
                 "finance.add_dimensionmapping", "finance.change_dimensionmapping"]
# sync's view_ permissions that are not every role's: raw payloads and personal data (granted above), and the
# admin-only screens — connections (hosts, secrets' state), inbound events (rejected callbacks), runs (tracebacks)
NOT_FOR_EVERY_ROLE = ["view_raw_payload", "view_personal_data", "view_connection", "view_inboundevent", "view_syncrun"]
ROLE_NAMES = ["pmo", "finance_ops", "integration_admin", "viewer"]


def define_roles(Group, Permission) -> None:
    def perms(codes):
        return [Permission.objects.get(content_type__app_label=c.split(".")[0], codename=c.split(".")[1])
                for c in codes]

    present = set(Permission.objects.values_list("content_type__app_label", "codename"))
    admin_extra = [c for c in ADMIN_EXTRA if tuple(c.split(".")) in present]  # the core migration runs before sla's
    finance_extra = [c for c in FINANCE_EXTRA if tuple(c.split(".")) in present]
    views = list(Permission.objects.filter(content_type__app_label__in=VIEW_APPS, codename__startswith="view_")
                 .exclude(content_type__app_label="sync", codename__in=NOT_FOR_EVERY_ROLE))
    roles = {
        "viewer": views,
        "pmo": views + perms(WORKER_PERMS),
        "finance_ops": views + perms(WORKER_PERMS + finance_extra),
        "integration_admin": views + perms(WORKER_PERMS + admin_extra + finance_extra),
    }
    for name, permissions in roles.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set(permissions)
