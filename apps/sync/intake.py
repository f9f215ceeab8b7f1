"""Callback intake: verify, store once, answer fast; then (in a job) turn stored events into sync records.

The HTTP side (`receive`) does only what must happen before the sender gets its answer: size check, signature
check, parse, one INSERT … ON CONFLICT for all events of the request, a debounced wake-up. Everything else is
in `process_inbox`, which claims stored events in batches and creates records in bulk.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection as db, transaction
from django.utils import timezone

from apps.connectors.callbacks import EventSpec, Rejected
from apps.connectors.hubspot import inbound as hubspot_inbound
from apps.connectors.kantata import inbound as kantata_inbound
from apps.connectors.netsuite import inbound as netsuite_inbound
from apps.connectors.salesforce import inbound as salesforce_inbound
from apps.connectors.stripe import inbound as stripe_inbound
from apps.core.logging import log_context

from . import refusals
from .callback_secrets import PATH_SECRET_KINDS, callback_secret_matches
from .models import Connection, InboundEvent, SyncRecord
from .record_states import reset_fields
from .wakeup import PRIORITY_QUEUE, wake
from .workflows.catalog import get_workflow

log = logging.getLogger("handoff.intake")

KEPT_HEADERS = ("Content-Type", "User-Agent", "X-HubSpot-Signature-v3", "X-HubSpot-Request-Timestamp",
                "SOAPAction", "Content-Length", "Stripe-Signature", "X-Handoff-Signature", "X-Handoff-Timestamp",
                "webhook-id", "webhook-timestamp", "webhook-signature")


@dataclass
class Reply:
    status: int
    body: str
    content_type: str = "application/json"
    headers: dict = field(default_factory=dict)


def _pg_text(value: str) -> str:
    """PostgreSQL text cannot hold NUL: replace it (not drop it, so `12\\x003` does not become `123`)."""
    return value.replace("\x00", "\ufffd")


_JSON_ESCAPE = re.compile(r"\\(\\|u0000)")


def _pg_json(value) -> str:
    """JSON text for jsonb, which cannot hold \\u0000. Scans escapes left to right, so an escaped backslash
    followed by the letters u0000 (the text `\\u0000`, not a NUL) is left intact."""
    return _JSON_ESCAPE.sub(lambda m: m.group(0) if m.group(1) == "\\" else "\\ufffd",
                            json.dumps(value, default=str))


def _kept_headers(headers) -> dict:
    return {h: _pg_text(str(headers.get(h))[:500]) for h in KEPT_HEADERS if headers.get(h) is not None}


def find_connection(slug: str) -> Connection | None:
    """The connection a callback URL names, or None (also for a name no slug can be, e.g. with a NUL)."""
    if len(slug) > 50 or "\x00" in slug:
        return None
    return Connection.objects.filter(slug=slug).first()


def _refusal_reply(conn: Connection | None, status: int, reason: str, **extra) -> Reply:
    if conn is not None and conn.kind == "salesforce":
        return Reply(status, salesforce_inbound.soap_fault(reason), "text/xml; charset=utf-8")
    return Reply(status, json.dumps({"error": reason, **extra}))


def record_rejection(*, slug: str, conn: Connection | None, status: int, reason: str, body: bytes, headers,
                     source: str = "", size: int | None = None, correlation_id: str = "") -> Reply:
    """Store a refused callback (all of it, or a short excerpt: see refusals.py) and answer it; past the source
    address's limit of refusals, answer 429 and store nothing. `size`: the full body's length, when only its
    start was read."""
    retry_after = refusals.count_refusal(source)
    if retry_after is not None:
        reply = _refusal_reply(conn, 429, f"too many refused callbacks from this address; retry in {retry_after} s")
        reply.headers["Retry-After"] = str(retry_after)
        return reply
    size = len(body) if size is None else size
    kept = refusals.kept_bytes(conn, status)
    stored_reason = reason if size <= kept else f"{reason} [body of {size} bytes; the first {kept} kept]"
    text = _pg_text(body[:kept].decode("utf-8", errors="replace"))  # PostgreSQL text cannot hold NUL
    InboundEvent.objects.create(
        connection=conn, connection_slug=_pg_text(slug[:50]), status=InboundEvent.Status.REJECTED, verified=False,
        http_status=status, reason=_pg_text(stored_reason[:2000]), raw_body=text, headers=_kept_headers(headers),
    )
    return _refusal_reply(conn, status, reason, **({"correlation_id": correlation_id} if correlation_id else {}))


# connection kind → the module that verifies, checks and parses its callbacks (every refusal of that system):
# verify_and_parse(conn, *, method, uris, body, headers) -> list[EventSpec], raising Rejected(4xx, why)
INBOUND = {
    "hubspot": hubspot_inbound,
    "salesforce": salesforce_inbound,
    "kantata": kantata_inbound,
    "netsuite": netsuite_inbound,
    "stripe": stripe_inbound,
}


def _verify_and_parse(conn: Connection, *, method: str, uris: list[str], body: bytes, headers) -> list[EventSpec]:
    inbound = INBOUND.get(conn.kind)
    if inbound is None:
        raise Rejected(404, f"connection {conn.slug!r} ({conn.get_kind_display()}) does not receive callbacks")
    return inbound.verify_and_parse(conn, method=method, uris=uris, body=body, headers=headers)


def _check_url_secret(conn: Connection, url_secret: str | None) -> None:
    """A system that does not sign its callbacks must use the connection's secret URL; a signed one has none."""
    if conn.kind in PATH_SECRET_KINDS:
        if not url_secret:
            raise Rejected(401, f"{conn.get_kind_display()} callbacks are taken in only on this connection's secret "
                                f"URL, /api/v1/callbacks/{conn.slug}/<secret>/ (Console → Connections shows a new "
                                f"one when it is rotated)")
        if not callback_secret_matches(conn, url_secret):
            raise Rejected(401, "wrong secret in the callback URL (rotated? Console → Connections)")
    elif url_secret is not None:
        raise Rejected(404, f"{conn.get_kind_display()} callbacks are signed and have no secret URL: send them to "
                            f"/api/v1/callbacks/{conn.slug}/")


EVENT_ID_MAX = InboundEvent._meta.get_field("event_id").max_length


def _check_event_ids(specs: list[EventSpec]) -> None:
    """An event id is stored whole or the callback is refused: cut short, two events could become one."""
    for s in specs:
        if len(s.event_id) > EVENT_ID_MAX:
            raise Rejected(400, f"the event id ({s.event_id[:40]}…) is {len(s.event_id)} characters long; Handoff "
                                f"keeps event ids of at most {EVENT_ID_MAX}")


INSERT_SQL = """
INSERT INTO sync_inboundevent
    (connection_id, connection_slug, event_id, event_type, received_at, raw_body, headers, verified, status,
     http_status, reason, deliveries, workflow, source_key, title, payload)
VALUES {values}
ON CONFLICT (connection_id, event_id) WHERE verified
DO UPDATE SET deliveries = sync_inboundevent.deliveries + 1
RETURNING (xmax = 0) AS inserted, status
"""


def store_events(conn: Connection, specs: list[EventSpec], headers, status_code: int) -> Counter:
    """Insert every event once; a redelivered event only bumps its `deliveries`. One statement per request."""
    seen, unique = set(), []
    for s in specs:  # the same event twice in one request counts once
        if _pg_text(s.event_id) not in seen:
            seen.add(_pg_text(s.event_id))
            unique.append(s)
    now = timezone.now()
    hdrs = _pg_json(_kept_headers(headers))
    params, rows = [], []
    for s in unique:
        status = InboundEvent.Status.IGNORED if s.ignored else InboundEvent.Status.RECEIVED
        rows.append("(%s,%s,%s,%s,%s,%s,%s,true,%s,%s,%s,1,%s,%s,%s,%s)")
        params += [conn.pk, conn.slug, _pg_text(s.event_id), _pg_text(s.event_type), now, _pg_json(s.body),
                   hdrs, status, status_code, _pg_text(s.ignored[:2000]), s.workflow, _pg_text(s.source_key[:200]),
                   _pg_text(s.title[:300]), _pg_json(s.payload)]
    counts: Counter = Counter()
    with db.cursor() as cur:
        cur.execute(INSERT_SQL.format(values=",".join(rows)), params)
        for inserted, status in cur.fetchall():
            if not inserted:
                counts["duplicate"] += 1
            elif status == InboundEvent.Status.IGNORED:
                counts["ignored"] += 1
            else:
                counts["accepted"] += 1
    return counts


def receive(*, slug: str, method: str, uris: list[str], body: bytes, headers, source: str = "",
            size: int | None = None, url_secret: str | None = None) -> Reply:
    """Handle one callback request. Never raises for bad input: every refusal is a 4xx Reply and (below the
    source address's limit, see refusals.py) a stored row. `size` is the body's full length when the caller read
    only its start (an oversize body). `url_secret` is the secret segment of the callback URL, when it has one
    (apps/sync/callback_secrets.py).

    The last line of defence: an unexpected exception is logged with its traceback and becomes a stored
    rejection answered 400 with the request's correlation id, never a 500 (a 5xx makes senders retry the same
    request for days)."""
    correlation_id = str(uuid.uuid4())
    with log_context(connection=_pg_text(slug[:50]), correlation_id=correlation_id):
        try:
            # inside a transaction (a test, an atomic caller) a failed statement would poison it for the
            # rejection stored below: a savepoint keeps it usable; in autocommit nothing needs undoing
            with transaction.atomic() if db.in_atomic_block else nullcontext():
                return _receive(slug=slug, method=method, uris=uris, body=body, headers=headers, source=source,
                                size=len(body) if size is None else size, url_secret=url_secret)
        except Exception:
            log.exception("unexpected error while handling a callback; refused with 400")
            return record_rejection(
                slug=slug, conn=find_connection(slug), status=400, body=body, headers=headers, source=source,
                size=size, reason=f"unexpected error while handling the callback (correlation id {correlation_id})",
                correlation_id=correlation_id)


def _receive(*, slug: str, method: str, uris: list[str], body: bytes, headers, source: str, size: int,
             url_secret: str | None) -> Reply:
    conn = find_connection(slug)
    if conn is None:
        return record_rejection(slug=slug, conn=None, status=404, reason=f"unknown connection {slug[:50]!r}",
                                body=body, headers=headers, source=source, size=size)
    if size > settings.HANDOFF_MAX_CALLBACK_BYTES:
        return record_rejection(slug=slug, conn=conn, status=413,
                                reason=f"body of {size} bytes is over the {settings.HANDOFF_MAX_CALLBACK_BYTES}"
                                       f"-byte limit", body=body, headers=headers, source=source, size=size)
    if not conn.enabled:
        return record_rejection(slug=slug, conn=conn, status=403, reason="this connection is disabled",
                                body=body, headers=headers, source=source, size=size)
    try:
        _check_url_secret(conn, url_secret)
        specs = _verify_and_parse(conn, method=method, uris=uris, body=body, headers=headers)
        _check_event_ids(specs)
    except Rejected as rej:
        return record_rejection(slug=slug, conn=conn, status=rej.status, reason=rej.reason, body=body,
                                headers=headers, source=source, size=size)
    # the status stored with the events is the one answered: 202 only when something may be new to process
    accepted_status = 202 if conn.kind != "salesforce" and any(not s.ignored for s in specs) else 200
    counts = store_events(conn, specs, headers, accepted_status)
    if counts["accepted"]:
        wake("inbox")
    if conn.kind == "salesforce":
        # Salesforce retries until it gets the Ack, so duplicates and ignored notifications are acked too
        return Reply(200, salesforce_inbound.ACK, "text/xml; charset=utf-8")
    status = 202 if counts["accepted"] else 200
    return Reply(status, json.dumps({"accepted": counts["accepted"], "duplicates": counts["duplicate"],
                                     "ignored": counts["ignored"]}))


# ------------------------------------------------------------------ the inbox job


def _modified(ev: InboundEvent) -> str:
    return str((ev.payload or {}).get("source_modified_at") or "")


def process_inbox(limit: int = 1000) -> Counter:
    """Turn received events into sync records (one per source object), in batches, exactly once.

    Events for the same source object apply in source order: the newest version (the source's modification
    time) wins, and an older event never overwrites a record built from newer data."""
    total: Counter = Counter()
    deferred: set[int] = set()  # events left for a later pass, because their record is being worked right now
    while True:
        with transaction.atomic():
            events = list(InboundEvent.objects.select_for_update(skip_locked=True)
                          .filter(status=InboundEvent.Status.RECEIVED).exclude(id__in=deferred)
                          .order_by("received_at", "id")[:limit])
            if not events:
                break
            fetched = len(events)
            now = timezone.now()
            by_key: dict[tuple, list[InboundEvent]] = {}
            for ev in events:
                by_key.setdefault((ev.workflow, ev.connection_id, ev.source_key), []).append(ev)
            existing = {
                (r.workflow, r.source_connection_id, r.source_key): r
                for r in SyncRecord.objects.filter(source_key__in={k[2] for k in by_key},
                                                   source_connection_id__in={k[1] for k in by_key})
                .only("id", "workflow", "source_connection_id", "source_key", "status", "version", "context",
                      "priority")
            }
            new_records, refreshed, wait = [], [], set()
            for key, evs in by_key.items():
                newest = max(evs, key=_modified)
                wf = get_workflow(key[0])
                record = existing.get(key)
                if (record is not None and record.status == SyncRecord.Status.IN_PROGRESS
                        and _modified(newest) > str(record.context.get("source_modified_at") or "")):
                    # newer data for a record a worker holds right now: neither overwrite its work nor drop the
                    # news. The events stay received; a later pass (the sweeper wakes the inbox while any event
                    # is received) applies them once the record is done — re-running it if it already succeeded.
                    wait.update(ev.id for ev in evs)
                    continue
                if record is None:
                    new_records.append(SyncRecord(
                        workflow=key[0], stage=wf.stages[0].name, status=SyncRecord.Status.PENDING,
                        source_connection_id=key[1], source_key=key[2], title=newest.title,
                        original_payload=newest.payload, current_payload=newest.payload,
                        context={"source_modified_at": _modified(newest)},
                        priority=wf.priority(newest.payload), next_attempt_at=now, owner_team=wf.owner_team("")))
                elif (_modified(newest) > str(record.context.get("source_modified_at") or "")
                      and record.status == "succeeded" and wf.reopen_on_update):
                    # a correction of something already posted (e.g. a re-approved time entry): run it again with
                    # the new data; the context keeps the downstream ids, so the posted line is updated, not added
                    n = SyncRecord.objects.filter(pk=record.pk, status="succeeded").update(
                        original_payload=newest.payload, current_payload=newest.payload, title=newest.title,
                        **reset_fields(stage=wf.first_stage_on_restart or wf.stages[0].name, now=now),
                        context={**record.context, "source_modified_at": _modified(newest)}, updated_at=now)
                    if n:
                        refreshed.append(record)
                elif (_modified(newest) > str(record.context.get("source_modified_at") or "")
                      and record.status in ("held", "pending", "retrying") and record.version == 1):
                    # newer data from the system of record, and nobody has edited the record: start over with it
                    n = SyncRecord.objects.filter(pk=record.pk, version=1,
                                                  status__in=["held", "pending", "retrying"]).update(
                        original_payload=newest.payload, current_payload=newest.payload, title=newest.title,
                        **reset_fields(stage=wf.stages[0].name, now=now),
                        context={"source_modified_at": _modified(newest)}, updated_at=now)
                    if n:
                        refreshed.append(record)
            # a concurrent inbox job may have created the same record: conflicts are ignored, then looked up
            SyncRecord.objects.bulk_create(new_records, ignore_conflicts=True, batch_size=1000)
            ids = {(r.workflow, r.source_connection_id, r.source_key): r.id
                   for r in SyncRecord.objects.filter(source_key__in={k[2] for k in by_key},
                                                      source_connection_id__in={k[1] for k in by_key})
                   .only("id", "workflow", "source_connection_id", "source_key")}
            if wait:
                deferred |= wait
                events = [ev for ev in events if ev.id not in wait]
                total["deferred"] += len(wait)
            for ev in events:
                ev.record_id = ids[(ev.workflow, ev.connection_id, ev.source_key)]
            # one UPDATE … FROM (VALUES …) instead of bulk_update's CASE WHEN per row (half of this job's time)
            with db.cursor() as cur:
                cur.execute(
                    "UPDATE sync_inboundevent AS e SET record_id = v.record_id, status = %s, processed_at = %s "
                    "FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, record_id) WHERE e.id = v.id",
                    [InboundEvent.Status.PROCESSED.value, now, [e.id for e in events],
                     [e.record_id for e in events]])
            total["events"] += len(events)
            total["records"] += len(new_records)
            total["refreshed"] += len(refreshed)
            priorities = {r.priority for r in new_records} | {r.priority for r in refreshed}
        for p in priorities:
            wake(f"records:{PRIORITY_QUEUE[p]}")
        if fetched == limit and total["events"] + len(deferred) == limit:
            wake("inbox")  # a full batch: more is waiting, let another worker take batches too (SKIP LOCKED)
        if fetched < limit:
            break
    return total
