from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.core import demo, demo_book


class Command(BaseCommand):
    help = "Create the demo firm (legal entities, terms, sandbox connections, demo users) and print the logins."

    def add_arguments(self, parser):
        parser.add_argument("--engagements", type=int, default=300, help="size of the demo book of business")
        parser.add_argument("--no-book", action="store_true", help="reference data, connections and users only")

    def handle(self, *args, **opts):
        if not settings.HANDOFF_SANDBOX_ENABLED:
            raise CommandError("demo_setup needs HANDOFF_SANDBOX_ENABLED (never on a production system)")
        demo.setup_reference_data()
        demo.setup_connections(settings.HANDOFF_SANDBOX_URL)
        users = demo.setup_users(demo.credentials_path())
        if not opts["no_book"]:
            written = demo_book.build(opts["engagements"])
            if written:
                self.stdout.write("Demo book of business: " + ", ".join(f"{v} {k}" for k, v in written.items()))
        url = settings.HANDOFF_PUBLIC_URL
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS(f"Handoff will be at {url}/  (API docs: {url}/api/v1/docs/)"))
        self.stdout.write("Demo logins (also in .data/run/demo-credentials.json):")
        for username, password, group in users:
            self.stdout.write(f"  {username:<6} {password:<14} {group}")
        self.stdout.write("")
