import django_rq
from django.core.management.base import BaseCommand
from django_rq.utils import reset_db_connections

from apps.core.resilience import run_forever
from apps.core.workers import WORKER_TTL, HandoffWorker


class Command(BaseCommand):
    help = ("The RQ worker (the Procfile's `worker`): works the given queues in order (default: high default low), "
            "heartbeats every 10 s, and reconnects after a lost Redis or PostgreSQL connection instead of exiting.")

    def add_arguments(self, parser):
        parser.add_argument("queues", nargs="*", default=["high", "default", "low"])

    def handle(self, *args, queues, verbosity, **opts):
        level = {0: "WARNING", 1: "INFO"}.get(verbosity, "DEBUG")

        def work():
            rq_queues = [django_rq.get_queue(name) for name in queues]
            worker = HandoffWorker(rq_queues, connection=rq_queues[0].connection, worker_ttl=WORKER_TTL)
            reset_db_connections()
            worker.work(logging_level=level)
            # RQ quits its loop on a Redis error too; only a requested stop (SIGTERM, SIGINT) ends the command
            if not worker.stop_requested:
                raise ConnectionError("the RQ worker stopped without being asked to")

        run_forever(work, what="worker")
