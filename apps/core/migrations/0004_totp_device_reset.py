"""Let integration admins reset a person's second factor (view and delete TOTP devices in the admin)."""

import importlib

from django.db import migrations

create_roles = importlib.import_module("apps.core.migrations.0001_roles").create_roles


class Migration(migrations.Migration):
    dependencies = [("core", "0003_admin_only_views"), ("otp_totp", "0003_add_timestamps")]
    operations = [migrations.RunPython(create_roles, migrations.RunPython.noop)]
