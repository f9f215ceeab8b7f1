"""Planner statistics for the exception queue (measured in bench/results_queue.md): the filters on status,
team, reason and SLA state are correlated, and a tax id in search_keys is rare — without these the planner
misjudges row counts by 100× and picks slow plans."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("sync", "0008_desk_indexes_2")]
    operations = [
        migrations.RunSQL(
            [
                "ALTER TABLE sync_syncrecord ALTER COLUMN search_keys SET STATISTICS 1000",
                "CREATE STATISTICS IF NOT EXISTS syncrecord_queue_stats (mcv, dependencies) "
                "ON status, owner_team, reason_code, sla_state FROM sync_syncrecord",
                "ANALYZE sync_syncrecord",
            ],
            [
                "DROP STATISTICS IF EXISTS syncrecord_queue_stats",
                "ALTER TABLE sync_syncrecord ALTER COLUMN search_keys SET STATISTICS -1",
            ],
        ),
    ]
