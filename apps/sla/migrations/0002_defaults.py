"""The DOMAIN.md default SLA policies and calendar, and the integration admin's permissions on them."""

from django.contrib.auth.management import create_permissions
from django.db import migrations


def forwards(apps, schema_editor):
    from apps.sla.defaults import INTEGRATION_ADMIN_PERMS, install_defaults

    install_defaults(apps.get_model("sla", "BusinessCalendar"), apps.get_model("sla", "SlaPolicy"))

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group = Group.objects.filter(name="integration_admin").first()
    if group is None:
        return
    # permissions are normally created after all migrations; the group needs them now
    app_config = apps.get_app_config("sla")
    app_config.models_module = True
    create_permissions(app_config, verbosity=0, apps=apps)
    app_config.models_module = None
    group.permissions.add(*Permission.objects.filter(content_type__app_label="sla",
                                                     codename__in=INTEGRATION_ADMIN_PERMS))


def backwards(apps, schema_editor):
    from apps.sla.defaults import INTEGRATION_ADMIN_PERMS

    group = apps.get_model("auth", "Group").objects.filter(name="integration_admin").first()
    if group is not None:
        group.permissions.remove(*apps.get_model("auth", "Permission").objects.filter(
            content_type__app_label="sla", codename__in=INTEGRATION_ADMIN_PERMS))


class Migration(migrations.Migration):
    dependencies = [
        ("sla", "0001_initial"),
        ("core", "0001_roles"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(forwards, backwards)]
