"""Run the reconciliation now, in this process: `manage.py reconcile [--from 2026-01 --to 2026-10]`."""

from datetime import date

from django.core.management.base import BaseCommand, CommandError

from apps.reconcile import services
from apps.reconcile.models import ReconciliationRun


def _month(value: str) -> date:
    try:
        return date.fromisoformat(f"{value}-01")
    except ValueError:
        raise CommandError(f"“{value}” is not a month (YYYY-MM)")


class Command(BaseCommand):
    help = "Reconcile delivered vs billed vs recognised per engagement and month (default: last 12 complete months)"

    def add_arguments(self, parser):
        parser.add_argument("--from", dest="period_from", help="first month, YYYY-MM")
        parser.add_argument("--to", dest="period_to", help="last month, YYYY-MM")

    def handle(self, *args, period_from=None, period_to=None, **options):
        if bool(period_from) != bool(period_to):
            raise CommandError("give both --from and --to, or neither")
        try:
            run = services.run_now(trigger=ReconciliationRun.Trigger.COMMAND,
                                   period_from=_month(period_from) if period_from else None,
                                   period_to=_month(period_to) if period_to else None)
        except services.BadRange as exc:
            raise CommandError(str(exc))
        self.stdout.write(f"{run}: {run.lines} lines, {run.over_tolerance} over the tolerance, {run.opened} "
                          f"exceptions opened, {run.updated} updated, {run.resolved} resolved"
                          f"{' — ' + run.message if run.message else ''}")
