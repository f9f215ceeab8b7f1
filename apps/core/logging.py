"""Structured logs: one JSON object per line, carrying the context of the work being done.

`log_context(correlation_id=…, record_id=…)` sets fields (in a contextvar, so they follow the thread or task
that set them and vanish when the block ends); every log line written inside the block carries them. The
engine sets them per record, the intake per callback. Both formatters add them, plus the RQ job id when the
line is written inside a job, plus the `extra={…}` fields of the call.

No personal data: never pass payloads, bodies or tax ids as `extra` (fields with such names are redacted
anyway, see REDACTED_KEYS) and never format them into a message.

LOG_FORMAT (environment) picks the formatter: `json` (production default) or `plain` (one readable line,
context as key=value; the default when DEBUG is on, i.e. `./handoff run`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone

_context: ContextVar[dict] = ContextVar("handoff_log_context", default={})

# attributes every LogRecord has: anything else on a record came from `extra=`
_STANDARD = set(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {"message", "asctime",
                                                                                       "taskName"}
# never written as they are, whoever passes them: personal data or whole payloads
REDACTED_KEYS = {"payload", "current_payload", "original_payload", "body", "raw_body", "tax_id", "password",
                 "secret", "token", "authorization", "credentials", "inbound_secret"}


@contextmanager
def log_context(**fields) -> Iterator[None]:
    """Add fields to every log line written inside the block (nested blocks add to, and restore, the outer)."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict:
    return dict(_context.get())


def _job_id() -> str:
    try:
        from rq import get_current_job

        job = get_current_job()
        return job.id if job else ""
    except Exception:  # never let a log line fail
        return ""


def _safe(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "method") and hasattr(value, "path") and hasattr(value, "META"):
        # Django passes the request to django.request's lines: method and path only — a query string can hold
        # what a person searched for (a tax id, a name)
        return f"{value.method} {value.path}"
    return str(value)


def fields_of(record: logging.LogRecord) -> dict:
    """Context, job id and `extra` fields of a record (redacted), without the standard attributes."""
    out = {k: _safe(v) for k, v in _context.get().items()}
    job = _job_id()
    if job:
        out["job_id"] = job
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            out[key] = _safe(value)
    for key in out.keys() & REDACTED_KEYS:
        out[key] = "[redacted]"
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO-8601 UTC), level, logger, message, context, extra, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in fields_of(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class PlainFormatter(logging.Formatter):
    """`time LEVEL logger message key=value …` for people reading a terminal."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = fields_of(record)
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return line


def make_formatter() -> logging.Formatter:
    """The formatter LOGGING uses: LOG_FORMAT from the environment (json|plain); unset → plain with DEBUG, else
    json. Called by logging.config while Django sets up, so the final settings (local.py's DEBUG) are known."""
    from django.conf import settings

    fmt = (getattr(settings, "LOG_FORMAT", "") or os.environ.get("LOG_FORMAT", "")).strip().lower()
    if not fmt:
        fmt = "plain" if settings.DEBUG else "json"
    return PlainFormatter() if fmt == "plain" else JsonFormatter()
