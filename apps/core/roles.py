"""The four roles and the permissions their names promise (used by the data migration and the tests).

pmo / finance_ops: read everything in the console, fix + resubmit + ignore held records, see personal data.
integration_admin: all of that, plus connections, raw payloads, inbound events, runs, sandboxes.
viewer: read-only boards and records, no personal data, no raw payloads.
"""

VIEW_APPS = ["canonical", "sync", "finance", "forecast", "reconcile"]
WORKER_PERMS = ["sync.resubmit_syncrecord", "sync.ignore_syncrecord", "sync.view_personal_data"]
ADMIN_EXTRA = ["sync.view_raw_payload", "sync.add_connection", "sync.change_connection", "sync.view_connection",
               "sync.change_syncrecord", "sandbox.view_sandboxsystem", "sandbox.change_sandboxsystem",
               "sandbox.view_sandboxobject"]
# apps/sla: admin-editable SLA policies and business calendars
ADMIN_EXTRA += ["sla.add_slapolicy", "sla.change_slapolicy", "sla.view_slapolicy",
                "sla.add_businesscalendar", "sla.change_businesscalendar", "sla.view_businesscalendar",
                "sla.add_holiday", "sla.change_holiday", "sla.view_holiday", "sla.delete_holiday",
                "sla.add_entitycalendar", "sla.change_entitycalendar", "sla.view_entitycalendar"]
# apps/finance: the money policies and reference data finance owns (tolerance, markup, rates, ERP dimensions)
FINANCE_EXTRA = ["finance.change_financepolicy", "finance.add_exchangerate", "finance.change_exchangerate",
                 "finance.add_dimensionmapping", "finance.change_dimensionmapping"]
ROLE_NAMES = ["pmo", "finance_ops", "integration_admin", "viewer"]


def define_roles(Group, Permission) -> None:
    def perms(codes):
        return [Permission.objects.get(content_type__app_label=c.split(".")[0], codename=c.split(".")[1])
                for c in codes]

    present = set(Permission.objects.values_list("content_type__app_label", "codename"))
    admin_extra = [c for c in ADMIN_EXTRA if tuple(c.split(".")) in present]  # the core migration runs before sla's
    finance_extra = [c for c in FINANCE_EXTRA if tuple(c.split(".")) in present]
    views = list(Permission.objects.filter(content_type__app_label__in=VIEW_APPS, codename__startswith="view_")
                 .exclude(codename__in=["view_raw_payload", "view_personal_data"]))
    roles = {
        "viewer": views,
        "pmo": views + perms(WORKER_PERMS),
        "finance_ops": views + perms(WORKER_PERMS + finance_extra),
        "integration_admin": views + perms(WORKER_PERMS + admin_extra + finance_extra),
    }
    for name, permissions in roles.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set(permissions)
