"""One benchmark worker process: Django and the app are imported first, then it says `ready` and waits for `go`
on stdin, so that start-up is not timed. After `go` it runs exactly the Procfile's worker
(`manage.py rqworker high default low --worker-class rq.worker.SimpleWorker`, without the scheduler: bench/run.py
calls the sweeper itself, as the Procfile's scheduler would) until it receives SIGTERM (RQ's warm shutdown).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)
os.chdir(ROOT)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")


def main() -> int:
    import django

    django.setup()
    from django.core.management import call_command

    # import what the jobs use, so the first job does not pay for it
    import apps.connectors.clients  # noqa: F401
    import apps.sync.jobs  # noqa: F401
    import apps.sync.workflows.catalog  # noqa: F401
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 0
    call_command("rqworker", "high", "default", "low", worker_class="rq.worker.SimpleWorker", verbosity=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
