"""The exceptions of the sync machinery, in one module that imports nothing of ours but the Problem type, so the
engine, the desk, the services and the bulk actions can all raise and catch them without importing each other."""

from __future__ import annotations

from .workflows.base import Problem


class NotAllowed(Exception):
    """The user's role does not let them act on this record."""


class Conflict(Exception):
    """Somebody else changed the record since this user loaded it (optimistic locking)."""


class NotActionable(Exception):
    """The record is not held (it already went through, or is being worked)."""


class StillInvalid(Exception):
    """The fix leaves problems the workflow's rules still refuse; the record stays held."""

    def __init__(self, problems: list[Problem]):
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


class LeaseLost(Exception):
    """Another worker owns the record now (our lease expired); drop our result."""


class ConnectionPaused(Exception):
    """A stage asked for a client of a paused connection: the record waits for it (no call, no attempt spent)."""

    def __init__(self, connection):
        super().__init__(connection.slug)
        self.connection = connection
