from django.core.management import call_command
from django.core.management.base import BaseCommand

from apps.core.resilience import run_forever


class Command(BaseCommand):
    help = ("The scheduler (the Procfile's `scheduler`): `rqcron config.cron`, started again after a lost Redis "
            "connection instead of exiting. Like any rqcron start, a restart runs the interval jobs at once (each "
            "is safe to run early: the sweeper, SLA clocks, retention and the guarded forecast refresh).")

    def handle(self, *args, **opts):
        run_forever(lambda: call_command("rqcron", "config.cron"), what="scheduler")
