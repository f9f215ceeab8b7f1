"""Give the roles the delivery-to-cash permissions (finance views; finance policy and reference data)."""

import importlib

from django.db import migrations

create_roles = importlib.import_module("apps.core.migrations.0001_roles").create_roles


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0001_roles"),
        ("finance", "0001_initial"),
        ("forecast", "0001_initial"),
        ("reconcile", "0002_roles"),
    ]
    operations = [migrations.RunPython(create_roles, migrations.RunPython.noop)]
