"""The four roles and the permissions their names promise (used by the data migration and the tests).

pmo / finance_ops: read everything in the console, fix + resubmit + ignore held records, see personal data.
integration_admin: all of that, plus connections, raw payloads, inbound events, runs, sandboxes.
viewer: read-only boards and records, no personal data, no raw payloads.
"""

VIEW_APPS = ["canonical", "sync"]
WORKER_PERMS = ["sync.resubmit_syncrecord", "sync.ignore_syncrecord", "sync.view_personal_data"]
ADMIN_EXTRA = ["sync.view_raw_payload", "sync.add_connection", "sync.change_connection", "sync.view_connection",
               "sync.change_syncrecord", "sandbox.view_sandboxsystem", "sandbox.change_sandboxsystem",
               "sandbox.view_sandboxobject"]
ROLE_NAMES = ["pmo", "finance_ops", "integration_admin", "viewer"]


def define_roles(Group, Permission) -> None:
    def perms(codes):
        return [Permission.objects.get(content_type__app_label=c.split(".")[0], codename=c.split(".")[1])
                for c in codes]

    views = list(Permission.objects.filter(content_type__app_label__in=VIEW_APPS, codename__startswith="view_")
                 .exclude(codename__in=["view_raw_payload", "view_personal_data"]))
    roles = {
        "viewer": views,
        "pmo": views + perms(WORKER_PERMS),
        "finance_ops": views + perms(WORKER_PERMS),
        "integration_admin": views + perms(WORKER_PERMS + ADMIN_EXTRA),
    }
    for name, permissions in roles.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set(permissions)
