import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.demo import book, firm


class Command(BaseCommand):
    help = "Create the demo firm (legal entities, terms, sandbox connections, demo users) and print the logins."

    def add_arguments(self, parser):
        parser.add_argument("--engagements", type=int, default=300, help="size of the demo book of business")
        parser.add_argument("--no-book", action="store_true", help="reference data, connections and users only")
        parser.add_argument("--no-runs", action="store_true",
                            help="no reconciliation run and no forecast refresh at start")

    def handle(self, *args, **opts):
        if not settings.HANDOFF_SANDBOX_ENABLED:
            raise CommandError("demo_setup needs HANDOFF_SANDBOX_ENABLED (never on a production system)")
        firm.setup_reference_data()
        firm.setup_connections(settings.HANDOFF_SANDBOX_URL)
        users = firm.setup_users(firm.credentials_path())
        if not opts["no_book"]:
            written = book.build(opts["engagements"])  # with the reference data the live traffic bills with
            if written:
                self.stdout.write("Demo book of business: " + ", ".join(f"{v} {k}" for k, v in written.items()))
            if not opts["no_runs"]:
                self.start_runs()
        url = settings.HANDOFF_PUBLIC_URL
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS(f"Handoff will be at {url}/  (API docs: {url}/api/v1/docs/)"))
        self.stdout.write("Demo logins (also in .data/run/demo-credentials.json):")
        for username, password, group in users:
            self.stdout.write(f"  {username:<6} {password:<14} {group}")
        self.stdout.write("")

    def start_runs(self) -> None:
        """The reconciliation report and the forecast board have something fresh to show from the first minute:
        a reconciliation run now (config/cron.py runs it only at night), and a full forecast refresh queued for
        the worker (unless one is still open). The scheduler's first forecast run, right at its start, finds this
        one open or just succeeded and starts no second one. Neither stops the demo from starting if it fails."""
        from apps.forecast import services as forecast
        from apps.forecast.models import ForecastRefresh
        from apps.reconcile import services as reconcile
        from apps.reconcile.models import ReconciliationRun

        started = time.monotonic()
        try:
            run = reconcile.run_now(trigger=ReconciliationRun.Trigger.COMMAND)
            self.stdout.write(f"Reconciliation run {run.pk} ({run.period_from:%Y-%m} – {run.period_to:%Y-%m}): "
                              f"{run.status}, {run.lines} lines, {run.over_tolerance} over tolerance, {run.opened} "
                              f"exceptions opened ({time.monotonic() - started:.1f} s)")
        except Exception as exc:  # the run is marked failed and shows on the Runs page
            self.stdout.write(self.style.WARNING(f"Reconciliation run failed: {type(exc).__name__}: {exc}"))
        try:
            refresh = forecast.request_refresh(trigger=ForecastRefresh.Trigger.ON_DEMAND)
            self.stdout.write(f"Forecast refresh {refresh.pk} queued (the worker exports it to Anaplan)")
        except forecast.RefreshOpen:
            self.stdout.write("A forecast refresh is still open: not queuing another")
        except forecast.NoForecastConnection as exc:
            self.stdout.write(f"No forecast refresh: {exc}")
