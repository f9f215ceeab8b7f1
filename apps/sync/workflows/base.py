"""What a workflow is: an ordered list of stages, rules that validate its payload, and how it is owned."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Problem:
    """One reason a record cannot go through, in words a business user understands."""

    reason: str  # reason code, e.g. missing_legal_entity
    message: str  # plain language, naming the field
    fields: list[str] = field(default_factory=list)  # canonical field names at fault (highlighted in the form)
    system: str = ""  # the system that rejected it, when it is not a Handoff rule
    system_message: str = ""


class Hold(Exception):
    """A stage cannot continue until a person acts: validation failed or a system permanently refused."""

    def __init__(self, problems: list[Problem]):
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


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
    owner_team: Callable  # owner_team(reason_code) -> team
    priority: Callable  # priority(payload) -> 1..3
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


REGISTRY: dict[str, Workflow] = {}

# every workflow module registers itself when imported (DOMAIN.md workflows 1–7)
WORKFLOW_MODULES = [
    "apps.sync.workflows.quote_to_project",
    "apps.sync.workflows.time_to_billing",
    "apps.sync.workflows.milestone_to_invoice",
    "apps.sync.workflows.invoice_payment_to_crm",
    "apps.sync.workflows.change_order",
    "apps.sync.workflows.actuals_to_forecast",
    "apps.sync.workflows.reconciliation",
]
_loaded = False


def _load() -> None:
    global _loaded
    if _loaded:
        return
    import importlib

    for module in WORKFLOW_MODULES:
        importlib.import_module(module)
    _loaded = True


def register(wf: Workflow) -> Workflow:
    REGISTRY[wf.name] = wf
    return wf


def get_workflow(name: str) -> Workflow:
    _load()
    return REGISTRY[name]


def all_workflows() -> list[Workflow]:
    _load()
    return list(REGISTRY.values())
