"""A trigram index of the titles of held records and dead letters only (measured in bench/results_queue_10m.md):
the queue's search reads only those rows, but syncrecord_title_trgm indexes the whole table, so a title search
in the queue grew with it (24 ms at 1M, 77 ms at 5M, 109 ms p95 at 10M records). Built CONCURRENTLY: the table is
hot and large, and a plain CREATE INDEX would block the workers' writes for the length of a full scan."""

import django.contrib.postgres.indexes
import django.db.models.functions.text
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("sync", "0011_attempt_started_at"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="syncrecord",
            index=django.contrib.postgres.indexes.GinIndex(
                django.contrib.postgres.indexes.OpClass(django.db.models.functions.text.Upper("title"),
                                                        name="gin_trgm_ops"),
                condition=models.Q(("status__in", ["held", "dead"])), name="desk_title_trgm"),
        ),
    ]
