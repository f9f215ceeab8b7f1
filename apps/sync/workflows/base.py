"""What a workflow is: an ordered list of stages, rules that validate its payload, and how it is owned.

Each workflow module declares, as data at its top: OWNER_TEAM (hold reason → the team whose queue the record
lands in), DEFAULT_TEAM (every other reason, and a new record) and PRIORITY (1 money posting, 2 set-up,
3 reference data); `Workflow.owner_team` reads them the same way for all. A system's permanent refusal of a
stage's call is declared as a `Refusal` (words and the vendor field → canonical field map) and turned into a Hold
by `Refusal.as_hold()`, so every workflow names the field at fault alike.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

from apps.connectors.base import DownstreamError


@dataclass
class Problem:
    """One reason a record cannot go through, in words a business user understands."""

    reason: str  # reason code, e.g. missing_legal_entity
    message: str  # plain language, naming the field
    fields: list[str] = field(default_factory=list)  # canonical field names at fault (highlighted in the form)
    system: str = ""  # the system that rejected it, when it is not a Handoff rule
    system_message: str = ""


def problems_from(findings) -> list[Problem]:
    """The Problems for a domain rule's findings (apps/finance: reason, message, fields)."""
    return [Problem(f.reason, f.message, list(f.fields)) for f in findings]


class Hold(Exception):
    """A stage cannot continue until a person acts: validation failed or a system permanently refused."""

    def __init__(self, problems: list[Problem]):
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class Refusal:
    """What a system's permanent refusal of a stage's call (a 4xx other than 429) means for a person: a hold,
    in words, naming the canonical field to fix. A transient error passes through (the engine retries it).

    Templates are formatted with the stage's words (e.g. `what`) and: {message} the system's words, {system}
    the system (or "The system"), {System} the same capitalised, {field} the system's field, {label} the
    canonical field's words (or the system's field, or "a field"), {note} the note for the field at fault."""

    message: str = ""  # when the system names a field (or always, when `bare` is empty); "" → the engine's hold
    bare: str = ""  # when the system names no field
    fields: dict = field(default_factory=dict)  # the system's field (first path segment) → canonical field
    labels: dict = field(default_factory=dict)  # canonical field → words
    notes: dict = field(default_factory=dict)  # canonical field → why it is at fault (a template too)
    not_found: str = ""  # a 404: the object the stage reads is gone (held as source_not_found)
    reason: str = "downstream_validation"

    def problem(self, exc: DownstreamError, **words) -> Problem | None:
        """The Problem for this error, or None when the error is not one this refusal holds."""
        if exc.status == 404 and self.not_found:
            template, reason, fault = self.not_found, "source_not_found", ""
        elif exc.permanent and self.message:
            fault = self.fields.get((exc.field or "").split(".")[0].split("[")[0], "")
            template, reason = (self.bare if self.bare and not exc.field else self.message), self.reason
        else:
            return None
        values = {"message": exc.message, "system": exc.system or "The system",
                  "System": exc.system.title() if exc.system else "The system", "field": exc.field,
                  "label": self.labels.get(fault, exc.field or "a field"), **words}
        values["note"] = self.notes.get(fault, "").format(**values)
        return Problem(reason, template.format(**values), [fault] if fault else [], exc.system, exc.message)

    @contextmanager
    def as_hold(self, **words):
        """`with REFUSAL.as_hold(what=...):` around a stage's calls: a refusal it declares becomes a Hold."""
        try:
            yield
        except DownstreamError as exc:
            problem = self.problem(exc, **words)
            if problem is None:
                raise
            raise Hold([problem]) from exc


@dataclass
class Stage:
    name: str
    label: str
    run: Callable  # run(ctx) -> None; mutates ctx.context / ctx.payload, may raise Hold or DownstreamError
    system_role: str = ""  # the role of the system it calls (for the board), "" for Handoff's own steps
    # its canonical writes (on_commit functions) are idempotent upserts: the engine commits them on their own and
    # the record's progress with a later stage, instead of a commit of the record for this stage too
    idempotent_writes: bool = False


@dataclass
class Workflow:
    name: str
    label: str
    stages: list[Stage]
    validate: Callable  # validate(payload, *, record=None) -> list[Problem]
    owner_teams: dict[str, str]  # the module's OWNER_TEAM: hold reason → team
    default_team: str  # the module's DEFAULT_TEAM: any other reason (and a new record's, reason "", unless named)
    base_priority: int  # the module's PRIORITY: a new record's (the desk then derives it from its business impact)
    fix_fields: list[str]  # canonical fields a person may set on the fix form
    first_stage_on_restart: str = ""
    on_hold: Callable | None = None  # on_hold(ctx, problems): tell the source system (best effort)
    field_labels: dict = field(default_factory=dict)  # fix-form labels: canonical path → words
    # summary(payload) -> {"title": str, "amount": Decimal | None, "currency": str}: what the queue shows.
    # None: the quote-to-project shape (opportunity_name, amount, currency).
    summary: Callable | None = None
    # a newer version of an already-succeeded source object (re-approved time entry, re-sent invoice event) runs
    # the workflow again from first_stage_on_restart, keeping the context (downstream ids) so writes update
    reopen_on_update: bool = False

    def owner_team(self, reason: str) -> str:
        """Whose queue a record held for `reason` lands in."""
        return self.owner_teams.get(reason) or ADMIN_TEAM.get(reason) or self.default_team

    def priority(self, payload: dict) -> int:
        """A new record's priority: 1 money posting, 2 set-up, 3 reference data."""
        return self.base_priority

    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def next_stage(self, name: str) -> str | None:
        names = self.stage_names()
        i = names.index(name)
        return names[i + 1] if i + 1 < len(names) else None


# in every workflow an integration admin answers for Handoff's own failures and for a system that refuses its
# credentials or stays down: nobody else can act on them
ADMIN_TEAM = {"internal_error": "integration_admin", "downstream_auth": "integration_admin",
              "downstream_unavailable": "integration_admin"}
