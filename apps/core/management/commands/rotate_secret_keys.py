"""Re-encrypt every stored secret with the newest key of HANDOFF_SECRET_KEYS (the first one listed).

Rotation (docs/operations.md): put the new key first (`new,old`), deploy, run this command, then drop the old key.
Each table is rewritten in one transaction with its rows locked, so a secret saved meanwhile is not overwritten."""

from django.core.management.base import BaseCommand
from django.db import connection, transaction

from apps.core.encryption import encrypted_fields, rotate


class Command(BaseCommand):
    help = "Re-encrypt every secret stored at rest with the newest key of HANDOFF_SECRET_KEYS."

    def handle(self, *args, **options):
        quote = connection.ops.quote_name
        total = 0
        for model, field in encrypted_fields():
            table, column, pk = quote(model._meta.db_table), quote(field.column), quote(model._meta.pk.column)
            # raw SQL: the tokens themselves are rotated, the plaintext never leaves this loop
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"SELECT {pk}, {column} FROM {table} WHERE {column} <> '' FOR UPDATE")
                rows = cursor.fetchall()
                for row_pk, token in rows:
                    cursor.execute(f"UPDATE {table} SET {column} = %s WHERE {pk} = %s", [rotate(token), row_pk])
            total += len(rows)
            self.stdout.write(f"{model._meta.label}.{field.name}: {len(rows)} re-encrypted")
        self.stdout.write(self.style.SUCCESS(f"{total} secrets re-encrypted with the newest key"))
