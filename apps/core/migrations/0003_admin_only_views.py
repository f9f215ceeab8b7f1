"""Take connections, inbound events and runs out of the viewer / pmo / finance_ops roles (admin-only reads)."""

import importlib

from django.db import migrations

create_roles = importlib.import_module("apps.core.migrations.0001_roles").create_roles


class Migration(migrations.Migration):
    dependencies = [("core", "0002_finance_roles")]
    operations = [migrations.RunPython(create_roles, migrations.RunPython.noop)]
