"""The RQ worker Handoff runs, and how the web tells a live worker from a dead one.

Liveness is a heartbeat, not a registration: RQ registers a worker when it starts and unregisters it only when it
stops cleanly, so a SIGKILLed worker stays registered; and RQ heartbeats only between jobs (a SimpleWorker never
during one) and, when idle, once per dequeue timeout. `HandoffWorker` therefore heartbeats from a thread every
`HEARTBEAT_EVERY` seconds whatever the worker is doing, and a worker whose last heartbeat is older than
`settings.HANDOFF_WORKER_HEARTBEAT_TTL` counts as dead (`/readyz`, `handoff_rq_workers`). A thread stops with its
process, so a killed worker stops beating at once.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone

from django.conf import settings
from django.db import close_old_connections
from redis.exceptions import RedisError
from rq.utils import utcparse
from rq.worker import SimpleWorker
from rq.worker_registration import REDIS_WORKER_KEYS

HEARTBEAT_EVERY = 10  # seconds; settings.HANDOFF_WORKER_HEARTBEAT_TTL must leave room for a few missed beats
WORKER_TTL = 30  # RQ's own key expiry is this + 60 s, and its idle dequeue blocks for this − 15 s


class HandoffWorker(SimpleWorker):
    """RQ's in-process worker (no fork per job: jobs are short and many), plus a heartbeat thread and fresh
    database connections around every job (a backend PostgreSQL terminated fails once, not on every later job)."""

    stop_requested = False  # by SIGTERM / SIGINT (RQ's own flag is set only when the signal comes during a job)

    def request_stop(self, signum, frame):
        self.stop_requested = True
        super().request_stop(signum, frame)

    def work(self, *args, **kwargs):
        self._beating = threading.Event()
        beat = threading.Thread(target=self._beat, name="rq-heartbeat", daemon=True)
        beat.start()
        try:
            return super().work(*args, **kwargs)
        finally:
            self._beating.set()

    def _beat(self) -> None:
        while not self._beating.wait(HEARTBEAT_EVERY):
            try:
                if self.connection.sismember(REDIS_WORKER_KEYS, self.key):
                    self.heartbeat()
                else:  # Redis restarted empty under a running worker (RQ reconnects, but does not register again)
                    self.connection.delete(self.key)
                    self.register_birth()
            except (RedisError, OSError):  # Redis is away: RQ's loop waits for it to come back
                pass

    def register_death(self):
        # stop beating first: a beat after the death would recreate the worker's key
        if getattr(self, "_beating", None):
            self._beating.set()
        super().register_death()

    def execute_job(self, job, queue):
        close_old_connections()
        try:
            return super().execute_job(job, queue)
        finally:
            close_old_connections()


def worker_liveness(conn, now: datetime | None = None) -> tuple[list[str], list[str]]:
    """(live, dead) worker names: registered workers with a heartbeat within HANDOFF_WORKER_HEARTBEAT_TTL seconds,
    and the others (killed, or wedged without a beat) until their key expires. Two Redis round trips."""
    now = now or datetime.now(timezone.utc)
    keys = sorted(k.decode() if isinstance(k, bytes) else k for k in conn.smembers(REDIS_WORKER_KEYS))
    beats = []
    if keys:
        pipe = conn.pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, "last_heartbeat")
        beats = pipe.execute()
    live, dead = [], []
    for key, beat in zip(keys, beats):
        if not beat:  # its key expired (WORKER_TTL + 60 s after the last beat): gone, RQ drops it from the set later
            continue
        name = key.removeprefix(HandoffWorker.redis_worker_namespace_prefix)
        age = (now - utcparse(beat.decode() if isinstance(beat, bytes) else beat)).total_seconds()
        (live if age <= settings.HANDOFF_WORKER_HEARTBEAT_TTL else dead).append(name)
    return live, dead
