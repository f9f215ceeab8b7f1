"""The pieces that keep `./handoff run` (and any long-running process) going: the launcher's Supervisor restarts a
dead process, with its children, and leaves the others alone; run_forever reconnects after a lost connection; and a
worker is live by its heartbeat, not by its registration."""

from __future__ import annotations

import os
import re
import signal
import time
from datetime import datetime, timedelta, timezone

import django_rq
import pytest
from django.conf import settings
from django.db import OperationalError
from django.test import override_settings
from redis.exceptions import ConnectionError as RedisConnectionError
from rq.utils import utcformat

from apps.core.metrics import collect
from apps.core.resilience import run_forever
from apps.core.workers import HandoffWorker
from config.launcher import Supervisor


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_supervisor_restarts_a_dead_process_with_its_children_and_nothing_else(tmp_path):
    child = tmp_path / "child.pid"
    sup = Supervisor({"forker": f"sh -c 'sleep 300 & echo $! > {child}; wait'", "steady": "sleep 300"})
    for name in sup.commands:
        sup.start(name)
    try:
        wait_until(child.exists)
        forker, steady, orphan = sup.procs["forker"].pid, sup.procs["steady"].pid, int(child.read_text())

        os.kill(forker, signal.SIGKILL)
        wait_until(lambda: sup.procs["forker"].poll() is not None)
        sup.tick()  # notices the death: kills what the dead process left behind, schedules the restart
        wait_until(lambda: not alive(orphan))
        time.sleep(Supervisor.FIRST_PAUSE + 0.1)
        sup.tick()

        assert sup.procs["forker"].pid != forker and sup.procs["forker"].poll() is None
        assert sup.procs["steady"].pid == steady and alive(steady)
        assert sup.pause["forker"] == 2 * Supervisor.FIRST_PAUSE  # dying young again waits longer
    finally:
        sup.shutdown()
    assert all(p.poll() is not None for p in sup.procs.values())


def test_run_forever_reconnects_after_lost_connections_and_lets_bugs_through():
    calls, pauses = [], []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("terminating connection due to administrator command")
        if len(calls) == 2:
            raise RedisConnectionError("Connection refused")
        return "done"

    assert run_forever(flaky, what="test", sleep=pauses.append) == "done"
    assert pauses == [1.0, 2.0]

    def buggy():
        raise KeyError("a bug, not an outage")

    with pytest.raises(KeyError):
        run_forever(buggy, what="test", sleep=pauses.append)


@pytest.mark.django_db
@override_settings(HANDOFF_MIN_LIVE_WORKERS=1)
def test_readyz_counts_workers_by_heartbeat_not_by_registration(client):
    queue = django_rq.get_queue("default")
    worker = HandoffWorker([queue], connection=queue.connection, name="w-heartbeat")
    worker.register_birth()  # registered, as a worker is from its start until a clean stop

    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["workers_live"] == 1

    # SIGKILLed: still registered, but its heartbeat stopped
    stale = datetime.now(timezone.utc) - timedelta(seconds=settings.HANDOFF_WORKER_HEARTBEAT_TTL + 1)
    queue.connection.hset(worker.key, "last_heartbeat", utcformat(stale))
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["workers"] == "error: 0 live, at least 1 needed"
    assert ready.json()["workers_dead"] == ["w-heartbeat"]
    assert re.search(r"^handoff_rq_workers 0$", collect(), re.M)
    assert re.search(r"^handoff_rq_workers_dead 1$", collect(), re.M)
