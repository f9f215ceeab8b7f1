"""Give the roles the reconciliation report's view permissions (apps/core/roles.py VIEW_APPS lists "reconcile")."""

import importlib

from django.db import migrations

create_roles = importlib.import_module("apps.core.migrations.0001_roles").create_roles


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0001_roles"),
        ("reconcile", "0001_initial"),
    ]
    operations = [migrations.RunPython(create_roles, migrations.RunPython.noop)]
