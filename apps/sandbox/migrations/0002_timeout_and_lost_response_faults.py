from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("sandbox", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="sandboxsystem",
            name="timeout_rate",
            field=models.FloatField(
                default=0.0,
                help_text="Share of calls that hang past the client's timeout, then fail (nothing is written)"),
        ),
        migrations.AddField(
            model_name="sandboxsystem",
            name="lost_response_rate",
            field=models.FloatField(
                default=0.0,
                help_text="Share of calls served in full (the write commits) whose response then hangs past the "
                          "client's timeout: the caller never learns it succeeded"),
        ),
        migrations.AddField(
            model_name="sandboxsystem",
            name="hang_ms",
            field=models.PositiveIntegerField(
                default=0, help_text="How long a timed-out or lost call hangs (0: HANDOFF_HTTP_TIMEOUT + 1 s)"),
        ),
    ]
