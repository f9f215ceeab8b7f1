"""Long-running processes ride out a lost PostgreSQL or Redis connection instead of exiting.

`run_forever(fn)` calls `fn` again after a lost-connection error, with a growing pause, after closing every
Django database connection (a terminated backend leaves a connection object that fails on every use). Other
errors are bugs: they propagate, and the process supervisor restarts the process (docs/operations.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.db import InterfaceError, OperationalError, connections
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

# errors that say "the connection went away", not "the code is wrong": waiting and reconnecting helps
LOST_CONNECTION = (OperationalError, InterfaceError, RedisConnectionError, RedisTimeoutError, ConnectionError)


def run_forever(fn: Callable, *, what: str, first_pause: float = 1.0, max_pause: float = 30.0,
                sleep: Callable[[float], None] = time.sleep):
    """Return what `fn()` returns; while it raises a lost-connection error, reconnect and call it again.

    The pause doubles from `first_pause` up to `max_pause`, and starts over once `fn` has run longer than
    `max_pause` (it was connected for a while: the next outage is a new one)."""
    pause = first_pause
    while True:
        started = time.monotonic()
        try:
            return fn()
        except LOST_CONNECTION as exc:
            if time.monotonic() - started > max_pause:
                pause = first_pause
            log.warning("%s lost a connection (%s: %s); reconnecting in %.0f s", what, exc.__class__.__name__,
                        str(exc)[:200], pause)
            _close_database_connections()
            sleep(pause)
            pause = min(pause * 2, max_pause)


def _close_database_connections() -> None:
    for conn in connections.all(initialized_only=True):
        try:
            conn.close()
        except Exception:  # a connection whose server is gone may fail to close: it is dropped all the same
            pass
