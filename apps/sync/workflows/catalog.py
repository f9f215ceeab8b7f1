"""The workflows Handoff runs (DOMAIN.md workflows 1–7, in its order), by name: the one place that imports them
all. Modules a workflow imports (directly or not) never import this one: they are handed the Workflow, or import
the one workflow module they serve (apps/forecast/services.py: actuals_to_forecast)."""

from __future__ import annotations

from . import (
    actuals_to_forecast,
    change_order,
    invoice_payment_to_crm,
    milestone_to_invoice,
    quote_to_project,
    reconciliation,
    time_to_billing,
)
from .base import Workflow

# each module declares its WORKFLOW and the tables it reads (OWNER_TEAM, DEFAULT_TEAM, PRIORITY)
MODULES = (quote_to_project, time_to_billing, milestone_to_invoice, invoice_payment_to_crm, change_order,
           actuals_to_forecast, reconciliation)
WORKFLOWS: dict[str, Workflow] = {m.WORKFLOW.name: m.WORKFLOW for m in MODULES}


def get_workflow(name: str) -> Workflow:
    return WORKFLOWS[name]


def all_workflows() -> list[Workflow]:
    return list(WORKFLOWS.values())


def field_label(path: str) -> str:
    """The words for a canonical field path, from whichever workflow names it."""
    for wf in WORKFLOWS.values():
        if path in wf.field_labels:
            return wf.field_labels[path]
    return path.replace("_", " ").replace(".", " ")
