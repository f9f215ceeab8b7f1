"""SLA evaluation: for every open sync record, which SLA clock runs, when it runs out, and whether it has.

    evaluate(now=None) -> dict          the scheduled job (every 60 s): writes sla_due_at / sla_state of every
                                        open record, resets closed ones, and notifies each newly crossed
                                        threshold once (e-mail per owner team + optional webhook)
    assess_record(record, now=None)     the clocks running for one record (for a record page / the desk)

Which policies apply to a record (see SlaPolicy):
- flow policies of its workflow (or of any workflow) whose stage it has not passed yet, clock from created_at;
- for a held / dead record also the exception policy of its priority, clock from held_at.
The record's due time is the earliest due time of those clocks; its state the most severe of their states.

Cost: a fixed number of queries whatever the number of records (policies, calendars and holidays are loaded
once; the open records are streamed once; changed rows are written with one UPDATE … FROM unnest() per
5,000 rows, and only rows whose SLA values changed are written).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Q
from django.db.models.fields.json import KT
from django.utils import timezone

from apps.sync.models import SyncRecord
from apps.sync.workflows.catalog import all_workflows

from . import clock
from .models import BusinessCalendar, EntityCalendar, SlaPolicy

log = logging.getLogger("handoff.sla")

OPEN_STATUSES = ("pending", "in_progress", "retrying", "held", "dead")
EXCEPTION_STATUSES = ("held", "dead")
OK, DUE_SOON, BREACHED = "ok", "due_soon", "breached"
STATES = (OK, DUE_SOON, BREACHED)
SEVERITY = {"": 0, OK: 0, DUE_SOON: 1, BREACHED: 2}
WRITE_CHUNK = 5000
READ_CHUNK = 5000
LOCK_KEY = 0x51A_0001  # pg advisory lock: one evaluation at a time per database


@dataclass(frozen=True)
class Policy:
    """An SlaPolicy row reduced to what evaluation needs (plain, hashable, cheap)."""

    id: int
    name: str
    kind: str
    workflow: str
    stage: str
    priority: int
    minutes: int
    business_time: bool
    due_soon_percent: int

    @classmethod
    def from_model(cls, p: SlaPolicy) -> "Policy":
        return cls(p.pk, p.name, p.kind, p.workflow, p.stage, p.priority, p.duration_minutes, p.business_time,
                   p.due_soon_percent)

    def specificity(self, workflow: str, priority: int) -> int:
        return (2 if self.priority == priority else 0) + (1 if self.workflow == workflow else 0)

    def clock_points(self, start: datetime, cal: clock.Calendar) -> tuple[datetime, datetime]:
        """(due soon at, due at) for a clock started at `start`."""
        soon_minutes = self.minutes * self.due_soon_percent / 100
        if self.business_time:
            soon = clock.add_business_time(start, soon_minutes, cal)
            due = clock.add_business_time(soon, self.minutes - soon_minutes, cal)
        else:
            soon = start + timedelta(minutes=soon_minutes)
            due = start + timedelta(minutes=self.minutes)
        return soon, due


@dataclass(frozen=True)
class Assessment:
    """One SLA clock running for a record."""

    policy: Policy
    started_at: datetime
    due_soon_at: datetime
    due_at: datetime
    state: str

    @property
    def kind(self) -> str:
        return self.policy.kind


def _state(now: datetime, soon: datetime, due: datetime) -> str:
    if now >= due:
        return BREACHED
    if now >= soon:
        return DUE_SOON
    return OK


def summarise(assessments: list[Assessment]) -> tuple[datetime | None, str]:
    """A record's (sla_due_at, sla_state): the earliest due time, the most severe state."""
    if not assessments:
        return None, OK
    due = min(a.due_at for a in assessments)
    state = max((a.state for a in assessments), key=SEVERITY.__getitem__)
    return due, state


class Evaluator:
    """Policies, calendars and stage orders loaded once; assesses any number of records without queries."""

    def __init__(self, policies: list[Policy], entity_calendars: dict[str, clock.Calendar],
                 default_calendar: clock.Calendar, stage_order: dict[str, dict[str, int]]):
        self.policies = policies
        self.entity_calendars = entity_calendars
        self.default_calendar = default_calendar
        self.stage_order = stage_order
        self._resolved: dict[tuple[str, int], tuple[list[Policy], Policy | None]] = {}

    @classmethod
    def load(cls) -> "Evaluator":
        policies = [Policy.from_model(p) for p in SlaPolicy.objects.filter(active=True).order_by("pk")]
        calendars = {}
        default = None
        for cal in BusinessCalendar.objects.prefetch_related("holidays"):
            spec = cal.as_clock(holidays=[h.date for h in cal.holidays.all()])
            calendars[cal.pk] = spec
            if cal.is_default:
                default = spec
        entity = {code: calendars[cal_id] for code, cal_id in
                  EntityCalendar.objects.values_list("legal_entity__code", "calendar_id")}
        stage_order = {wf.name: {s: i for i, s in enumerate(wf.stage_names())} for wf in all_workflows()}
        return cls(policies, entity, default or clock.DEFAULT_CALENDAR, stage_order)

    def calendar_for(self, legal_entity_code) -> clock.Calendar:
        if legal_entity_code:
            cal = self.entity_calendars.get(str(legal_entity_code).strip())
            if cal is not None:
                return cal
        return self.default_calendar

    def policies_for(self, workflow: str, priority: int) -> tuple[list[Policy], Policy | None]:
        """(flow policies — the most specific one per stage —, the most specific exception policy)."""
        key = (workflow, priority)
        hit = self._resolved.get(key)
        if hit is not None:
            return hit
        flow_by_stage: dict[str, Policy] = {}
        exception = None
        for p in self.policies:
            if p.workflow not in ("", workflow) or p.priority not in (0, priority):
                continue
            if p.kind == SlaPolicy.Kind.FLOW:
                if p.stage and not p.workflow:
                    continue  # a stage only means something within its workflow
                cur = flow_by_stage.get(p.stage)
                if cur is None or p.specificity(workflow, priority) > cur.specificity(workflow, priority):
                    flow_by_stage[p.stage] = p
            elif exception is None or p.specificity(workflow, priority) > exception.specificity(workflow, priority):
                exception = p
        hit = (list(flow_by_stage.values()), exception)
        self._resolved[key] = hit
        return hit

    def stage_done(self, workflow: str, record_stage: str, policy_stage: str) -> bool:
        """Is the record past `policy_stage`? Unknown stages count as not done (the clock keeps running)."""
        if not policy_stage:
            return False  # "until the record succeeds": an open record has not
        order = self.stage_order.get(workflow)
        if not order or policy_stage not in order or record_stage not in order:
            return False
        return order[record_stage] > order[policy_stage]

    def assess(self, *, workflow: str, stage: str, status: str, priority: int, created_at: datetime,
               held_at: datetime | None, updated_at: datetime | None, legal_entity, now: datetime) -> list[Assessment]:
        if status not in OPEN_STATUSES:
            return []
        flows, exception = self.policies_for(workflow, priority)
        cal = None
        out = []
        for p in flows:
            if self.stage_done(workflow, stage, p.stage):
                continue
            if p.business_time and cal is None:
                cal = self.calendar_for(legal_entity)
            soon, due = p.clock_points(created_at, cal)
            out.append(Assessment(p, created_at, soon, due, _state(now, soon, due)))
        if exception is not None and status in EXCEPTION_STATUSES:
            start = held_at or updated_at or created_at  # a dead letter may never have been "held"
            if exception.business_time and cal is None:
                cal = self.calendar_for(legal_entity)
            soon, due = exception.clock_points(start, cal)
            out.append(Assessment(exception, start, soon, due, _state(now, soon, due)))
        return out


def assess_record(record: SyncRecord, now: datetime | None = None,
                  evaluator: Evaluator | None = None) -> list[Assessment]:
    """The SLA clocks running for one record right now (empty when none applies)."""
    ev = evaluator or Evaluator.load()
    return ev.assess(workflow=record.workflow, stage=record.stage, status=record.status, priority=record.priority,
                     created_at=record.created_at, held_at=record.held_at, updated_at=record.updated_at,
                     legal_entity=(record.current_payload or {}).get("legal_entity"),
                     now=now or timezone.now())


def next_notified_state(state: str, notified: str) -> tuple[str, bool]:
    """(new sla_notified_state, notify now?). A state is notified when it is more severe than the last one
    notified; back to ok clears the memory (a new clock, e.g. a new hold, is notified afresh); a milder state
    (an admin relaxed a policy) is remembered silently."""
    if state == OK:
        return "", False
    if SEVERITY[state] > SEVERITY.get(notified, 0):
        return state, True
    return state, False


@contextmanager
def _single_run():
    with connection.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY])
        acquired = cur.fetchone()[0]
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])


_UPDATE_SQL = """
UPDATE {table} AS r
   SET sla_due_at = v.due_at, sla_state = v.state, sla_notified_state = v.new_notified
  FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[], %s::text[], %s::text[],
              %s::text[], %s::boolean[])
       AS v(id, status, stage, held_at, due_at, state, old_notified, new_notified, notify)
 WHERE r.id = v.id
   AND r.status = v.status AND r.stage = v.stage AND r.held_at IS NOT DISTINCT FROM v.held_at
   AND r.sla_notified_state = v.old_notified
RETURNING r.id, v.notify
"""


def _write(changes: list[tuple]) -> tuple[int, list[int]]:
    """Write changed rows, guarded: a row a worker moved on since we read it is left for the next run (so a
    stale state never lands on it), and a notification is claimed only once (old notified state must match).
    Returns (rows written, ids whose notification this run claimed)."""
    written, claimed = 0, []
    sql = _UPDATE_SQL.format(table=connection.ops.quote_name(SyncRecord._meta.db_table))
    for i in range(0, len(changes), WRITE_CHUNK):
        chunk = changes[i:i + WRITE_CHUNK]
        columns = [list(col) for col in zip(*chunk)]
        with connection.cursor() as cur:
            cur.execute(sql, columns)
            rows = cur.fetchall()
        written += len(rows)
        claimed.extend(pk for pk, notify in rows if notify)
    return written, claimed


def _reset_closed() -> int:
    """Records that left the open statuses carry no SLA clock (only those not already reset are written)."""
    return (SyncRecord.objects.exclude(status__in=OPEN_STATUSES)
            .filter(Q(sla_due_at__isnull=False) | Q(sla_state__in=[DUE_SOON, BREACHED]) | ~Q(sla_notified_state=""))
            .update(sla_due_at=None, sla_state=OK, sla_notified_state=""))


def evaluate(now: datetime | None = None) -> dict:
    """Recompute the SLA of every open record as of `now` and notify newly crossed thresholds once."""
    now = now or timezone.now()
    if timezone.is_naive(now):
        now = timezone.make_aware(now, timezone.get_default_timezone())
    with _single_run() as acquired:
        if not acquired:
            log.info("SLA evaluation skipped: another one is running")
            return {"skipped": 1}
        ev = Evaluator.load()
        rows = (SyncRecord.objects.filter(status__in=OPEN_STATUSES).order_by()
                .annotate(le_code=KT("current_payload__legal_entity"))
                .values_list("id", "workflow", "stage", "status", "priority", "created_at", "held_at", "updated_at",
                             "sla_due_at", "sla_state", "sla_notified_state", "owner_team", "le_code")
                .iterator(chunk_size=READ_CHUNK))
        counts = {"open": 0, OK: 0, DUE_SOON: 0, BREACHED: 0, "errors": 0}
        changes: list[tuple] = []
        crossed: dict[int, tuple[str, str, datetime | None]] = {}  # id -> (team, state, due)
        for (pk, workflow, stage, status, priority, created_at, held_at, updated_at, old_due, old_state,
             notified, team, le_code) in rows:
            counts["open"] += 1
            try:
                assessments = ev.assess(workflow=workflow, stage=stage, status=status, priority=priority,
                                        created_at=created_at, held_at=held_at, updated_at=updated_at,
                                        legal_entity=le_code, now=now)
            except ValueError as exc:  # e.g. a calendar without working time: skip the record, not the run
                if not counts["errors"]:
                    log.error("SLA: cannot evaluate record %s: %s", pk, exc)
                counts["errors"] += 1
                continue
            due, state = summarise(assessments)
            counts[state] += 1
            new_notified, should_notify = next_notified_state(state, notified)
            if (due, state, new_notified) == (old_due, old_state, notified):
                continue
            changes.append((pk, status, stage, held_at, due, state, notified, new_notified, should_notify))
            if should_notify:
                crossed[pk] = (team, state, due)
        written, claimed = _write(changes)
        reset = _reset_closed()
    result = {**counts, "changed": written, "reset": reset, "notified": 0, "emails": 0, "webhooks": 0}
    if claimed:
        from .notifications import notify_crossed

        sent = notify_crossed({pk: crossed[pk] for pk in claimed}, now=now)
        result.update(notified=len(claimed), **sent)
    if written or reset or claimed:
        log.info("SLA evaluation: %s", result)
    return result
