"""Wake-ups: the only thing Handoff puts in Redis. The work itself is rows in PostgreSQL.

A wake-up is enqueued after commit and debounced with a short-lived key (SET NX EX), so a burst of 10,000
callbacks enqueues a handful of jobs, not 10,000. A job clears its key when it starts, so work arriving while it
runs wakes another job. If Redis is down or a job is lost, nothing is lost: the sweeper wakes up whatever is
still due (see sweep()).
"""

from __future__ import annotations

import logging

import django_rq
from django.db import transaction
from redis.exceptions import RedisError

log = logging.getLogger("handoff.wakeup")
WAKE_TTL_SECONDS = 30

# wake-up kind → (RQ queue, job function path, kwargs)
KINDS = {
    "inbox": ("high", "apps.sync.jobs.process_inbox", {}),
    "records:high": ("high", "apps.sync.jobs.drain_records", {"queue_name": "high"}),
    "records:default": ("default", "apps.sync.jobs.drain_records", {"queue_name": "default"}),
    "records:low": ("low", "apps.sync.jobs.drain_records", {"queue_name": "low"}),
}


def wake_key(kind: str) -> str:
    return f"handoff:wake:{kind}"


def enqueue_now(kind: str) -> bool:
    queue_name, func, kwargs = KINDS[kind]
    try:
        conn = django_rq.get_connection(queue_name)
        if not conn.set(wake_key(kind), "1", nx=True, ex=WAKE_TTL_SECONDS):
            return False
        # already after commit (wake) or outside any transaction (sweeper): enqueue now
        queue = django_rq.get_queue(queue_name, commit_mode="auto")
        queue.enqueue(func, kwargs=kwargs, job_timeout=900, result_ttl=300, failure_ttl=86400)
        return True
    except RedisError as exc:
        log.warning("wake-up %s not sent (%s); the sweeper will pick the work up", kind, exc)
        return False


def wake(kind: str) -> None:
    """Wake a worker for `kind` once the current transaction commits."""
    transaction.on_commit(lambda: enqueue_now(kind))


def clear(kind: str) -> None:
    queue_name = KINDS[kind][0]
    try:
        django_rq.get_connection(queue_name).delete(wake_key(kind))
    except RedisError:
        pass
