"""Connection secrets encrypted at rest: the columns become text holding Fernet tokens, and the values already
stored are encrypted in place with the newest key of HANDOFF_SECRET_KEYS (decrypted again on the way back)."""

import json

from django.db import migrations

import apps.core.encryption
from apps.core.encryption import decrypt, encrypt

COLUMNS = ("credentials", "inbound_secret")


def _rewrite(schema_editor, change):
    # raw SQL: the model's fields would try to decrypt the plaintext they are about to encrypt
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT id, credentials, inbound_secret FROM sync_connection FOR UPDATE")
        for pk, *values in cursor.fetchall():
            new = [change(column, value) for column, value in zip(COLUMNS, values)]
            cursor.execute("UPDATE sync_connection SET credentials = %s, inbound_secret = %s WHERE id = %s",
                           [*new, pk])


def encrypt_rows(apps, schema_editor):
    def change(column, value):
        empty = not value or (column == "credentials" and json.loads(value) == {})
        return "" if empty else encrypt(value)
    _rewrite(schema_editor, change)


def decrypt_rows(apps, schema_editor):
    def change(column, value):
        if not value:
            return "{}" if column == "credentials" else ""
        return decrypt(value)
    _rewrite(schema_editor, change)


class Migration(migrations.Migration):

    dependencies = [
        ('sync', '0014_callback_url_secret'),
    ]

    operations = [
        migrations.AlterField(
            model_name='connection',
            name='credentials',
            field=apps.core.encryption.EncryptedJSONField(blank=True, default=dict, help_text='Outbound auth, e.g. {"access_token": "…"}; never shown in the console'),
        ),
        migrations.AlterField(
            model_name='connection',
            name='inbound_secret',
            field=apps.core.encryption.EncryptedTextField(blank=True, help_text="HubSpot: the app's client secret (signs webhooks v3)"),
        ),
        migrations.RunPython(encrypt_rows, decrypt_rows),
    ]
