"""Groups with the permissions their names promise.

pmo / finance_ops: read everything in the console, fix + resubmit + ignore held records, see personal data.
integration_admin: all of that, plus connections, raw payloads, inbound events, runs, sandboxes.
viewer: read-only boards and records, no personal data, no raw payloads.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEW_APPS = ["canonical", "sync"]
WORKER_PERMS = ["sync.resubmit_syncrecord", "sync.ignore_syncrecord", "sync.view_personal_data"]
ADMIN_EXTRA = ["sync.view_raw_payload", "sync.add_connection", "sync.change_connection", "sync.view_connection",
               "sync.change_syncrecord", "sandbox.view_sandboxsystem", "sandbox.change_sandboxsystem",
               "sandbox.view_sandboxobject"]


def create_roles(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0, apps=apps)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")

    def perms(codes):
        out = []
        for code in codes:
            app_label, codename = code.split(".")
            out.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
        return out

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


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("canonical", "0001_initial"),
        ("sync", "0001_initial"),
        ("sandbox", "0001_initial"),
    ]
    operations = [migrations.RunPython(create_roles, migrations.RunPython.noop)]
