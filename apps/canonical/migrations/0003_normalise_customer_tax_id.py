"""Stored tax ids in their normalised form, so the duplicate-customer rule (which compares normalised tax ids)
finds customers created before the ids were normalised. An id that cannot be normalised is left as it is."""

from django.db import migrations

from apps.canonical import normalise


def normalise_tax_ids(apps, schema_editor):
    Customer = apps.get_model("canonical", "Customer")
    changed = []
    for customer in Customer.objects.exclude(tax_id="").only("pk", "tax_id", "country").iterator():
        try:
            compact = normalise.tax_id(customer.tax_id, customer.country)
        except ValueError:
            continue
        if compact != customer.tax_id:
            customer.tax_id = compact
            changed.append(customer)
    Customer.objects.bulk_update(changed, ["tax_id"], batch_size=1000)


class Migration(migrations.Migration):

    dependencies = [
        ("canonical", "0002_delivery_to_cash"),
    ]

    operations = [
        migrations.RunPython(normalise_tax_ids, migrations.RunPython.noop),
    ]
