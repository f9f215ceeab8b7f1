"""The stack survives its own faults: `./handoff run`'s own process set (web, worker, scheduler under the launcher's
Supervisor), against this test's PostgreSQL database and a Valkey of its own, with the sandboxes served by the live
server. One stack, three faults in turn — Valkey killed for 10 s, every PostgreSQL backend terminated, the worker
SIGKILLed — and after each: the web answered throughout, the work sent meanwhile is done within a minute, nothing
lost or duplicated (tests/faults/kit.py check_outcome), and the processes reconnected instead of exiting. Runs in ~2 minutes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import requests
from django.utils import timezone

from apps.core.workers import worker_liveness
from apps.forecast.models import ForecastRefresh
from config.launcher import EmbeddedValkey

from tests.callbacks import HUBSPOT_SECRET
from tests.faults.kit import (ROOT, check_outcome, create_hubspot_deals, database_url_of_this_test, free_port,
                              signed_hubspot_post, terminate_backends, wait_for, wait_settled)

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]

RESUME_WITHIN = 60  # seconds: work sent during or right after a fault is done within this
METRICS_TOKEN = "stack-faults-token"


class Stack:
    """The Procfile's web, worker and scheduler under `python -m config.launcher supervise`, in its own session."""

    def __init__(self, tmp: Path):
        self.valkey = EmbeddedValkey(tmp / "valkey", free_port(), durable=False)
        self.redis_url = self.valkey.start()
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log_path = tmp / "stack.log"
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.local", "DEBUG": "0",
               "DATABASE_URL": database_url_of_this_test(), "REDIS_URL": self.redis_url,
               "WEB_BIND": self.url.removeprefix("http://"), "WEB_CONCURRENCY": "1", "PYTHONUNBUFFERED": "1",
               "LOG_LEVEL": "WARNING", "LOG_FORMAT": "plain", "HANDOFF_METRICS_TOKEN": METRICS_TOKEN,
               "HANDOFF_LEASE_SECONDS": "5", "HANDOFF_SANDBOX_ENABLED": "0"}
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "config.launcher", "supervise", "web", "worker",
                                      "scheduler"], cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def starts(self, name: str) -> list[int]:
        """The pids the supervisor started `name` with, in order (a restart adds one)."""
        return [int(p) for p in re.findall(rf"^{name}\s*\| ==> started \(pid (\d+)\)", self.output(), re.M)]

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.url + path, timeout=10, **kw)

    def readyz(self) -> dict:
        response = self.get("/readyz")
        return {"http": response.status_code, **response.json()}

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def kill_valkey(self) -> None:
        os.kill(int((self.valkey.data / "valkey.pid").read_text()), signal.SIGKILL)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)  # the supervisor stops its processes' groups
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.valkey.stop()
        self.log.close()


@pytest.fixture
def stack(sandboxes, tmp_path):
    # the hourly forecast export ran just now (as after demo_setup): the scheduler's start-up run skips it, so the
    # only records are the deals this test sends
    now = timezone.now()
    ForecastRefresh.objects.create(trigger=ForecastRefresh.Trigger.SCHEDULE, status=ForecastRefresh.Status.SUCCEEDED,
                                   started_at=now, finished_at=now)
    s = Stack(tmp_path)
    try:
        wait_for(lambda: _answers(s) and s.readyz()["http"] == 200, timeout=90,
                 what=f"the stack to be ready with a live worker\n{s.output()[-3000:]}")
        yield s
    finally:
        s.stop()


def _answers(stack: Stack) -> bool:
    try:
        return stack.get("/healthz").status_code == 200
    except requests.RequestException:
        return False


def send_deals(stack: Stack, n: int, seed: int) -> list[str]:
    """n closed-won deals created in the HubSpot sandbox and their webhooks POSTed to the stack's web."""
    deal_ids, events = create_hubspot_deals(n, seed=seed, bad_share=0)
    response = signed_hubspot_post(f"{stack.url}/api/v1/callbacks/hubspot/", HUBSPOT_SECRET, events)
    assert response.status_code in (200, 202), response.text[:500]
    return [f"deal:{d}" for d in deal_ids]


def done_within_a_minute(stack: Stack, keys: list[str], expected: int) -> None:
    try:
        wait_settled(expected=expected, timeout=RESUME_WITHIN)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- stack output ---\n{stack.output()[-4000:]}") from None
    result = check_outcome(keys)
    assert result["records"] == len(keys), result


def test_the_stack_rides_out_valkey_postgres_and_a_killed_worker(stack):
    keys: list[str] = []
    keys += send_deals(stack, 5, seed=1)
    done_within_a_minute(stack, keys, len(keys))
    worker_pid, scheduler_pid = stack.starts("worker")[0], stack.starts("scheduler")[0]

    # 1. Valkey gone for 10 s: the web answers and takes callbacks (they wait in PostgreSQL), readiness says Redis
    stack.kill_valkey()
    outage_ends = time.monotonic() + 10
    keys += send_deals(stack, 5, seed=2)
    assert stack.get("/login/").status_code == 200
    ready = stack.readyz()
    assert ready["http"] == 503 and ready["redis"].startswith("error"), ready
    time.sleep(max(0.0, outage_ends - time.monotonic()))
    stack.valkey.start()
    done_within_a_minute(stack, keys, len(keys))
    # the worker and the scheduler reconnected: the supervisor did not have to start them again
    assert stack.starts("worker") == [worker_pid] and stack.starts("scheduler") == [scheduler_pid], stack.output()

    # 2. every PostgreSQL backend terminated under the web and the worker
    assert terminate_backends() >= 1
    assert stack.get("/login/").status_code == 200
    keys += send_deals(stack, 5, seed=3)
    done_within_a_minute(stack, keys, len(keys))
    assert stack.starts("worker") == [worker_pid], stack.output()

    # 3. the worker SIGKILLed: the supervisor starts another; readiness and the metrics name the dead one
    [victim] = worker_liveness(stack.redis())[0]
    os.kill(worker_pid, signal.SIGKILL)
    keys += send_deals(stack, 5, seed=4)
    done_within_a_minute(stack, keys, len(keys))
    assert len(stack.starts("worker")) == 2

    def dead_worker_reported():
        ready = stack.readyz()
        return ready if victim in ready.get("workers_dead", []) else None

    ready = wait_for(dead_worker_reported, timeout=RESUME_WITHIN, every=1, what=f"/readyz to report {victim} dead")
    assert ready["workers_live"] == 1, ready  # the restarted worker only: the dead one is not counted as live
    metrics = stack.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    assert re.search(r"^handoff_rq_workers 1$", metrics, re.M), metrics
    assert re.search(r"^handoff_rq_workers_dead 1$", metrics, re.M), metrics
    assert stack.starts("web")[1:] == [], "the web never went down"
