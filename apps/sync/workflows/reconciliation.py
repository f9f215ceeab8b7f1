"""Reconciliation exceptions: one record per engagement and month whose delivered / billed / recognised figures
disagree by more than the tolerance (apps/reconcile/rules.py has the rules).

Records are not created by callbacks: the reconciliation run (apps/reconcile/services.py, nightly and on demand)
creates them directly as held (reason `reconciliation_variance`, owner finance ops, source key
`recon:<engagement code>:<YYYY-MM>`, source connection: the ERP), resolves them when a later run finds the
variance gone, and re-opens them when it comes back.

A person then either
- fixes the cause in the system at fault (the missing posting, invoice or revenue entry) and resubmits: the one
  stage, `check`, recomputes that engagement-month and holds again, or succeeds when the variance is within the
  tolerance; or
- accepts the variance with a reason (fix field `accepted_variance_reason`) and resubmits: the stage succeeds and
  records the acceptance (variance, reason, time) in the record's context. The acceptance covers that exact
  variance: a later run that finds a different one re-opens the record (so does a record resolved with
  "ignore": a different variance than the one it showed re-opens it).
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal

from django.utils import timezone

from .base import Hold, Problem, Stage, Workflow

NAME = "reconciliation"
# every hold is finance ops' (base.ADMIN_TEAM adds Handoff's own failures and outages)
OWNER_TEAM: dict[str, str] = {}
DEFAULT_TEAM = "finance_ops"
PRIORITY = 1  # money
REASON = "reconciliation_variance"
STAGE = "check"
FIX_FIELDS = ["accepted_variance_reason"]
FIELD_LABELS = {"accepted_variance_reason": "accept the variance — reason"}
# the payload keys that hold figures: a run rewrites a record only when one of them changed
FIGURE_KEYS = ("contract_type", "currency", "delivered", "billed", "recognised", "expected", "compared", "variance",
               "tolerance")
FIGURE_LABELS = {"delivered": "delivered", "billed": "billed", "recognised": "recognised",
                 "expected": "retainer fee"}
PERIOD_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def _s(value) -> str | None:
    return None if value is None else str(value)


def payload_for(*, engagement_id: int, engagement_code: str, period: date, result, currency: str,
                contract_type: str, tolerance: Decimal, accepted_variance_reason: str = "") -> dict:
    """The record's payload: the three figures side by side (plus the retainer fee), which must agree, the
    variance and the tolerance it was checked against. Money as strings (exact)."""
    return {
        "engagement_id": engagement_id, "engagement_code": engagement_code, "period": f"{period:%Y-%m}",
        "contract_type": contract_type, "currency": currency,
        "delivered": _s(result.delivered), "billed": _s(result.billed), "recognised": _s(result.recognised),
        "expected": _s(result.expected), "compared": list(result.compared), "variance": _s(result.variance),
        "tolerance": _s(tolerance), "accepted_variance_reason": accepted_variance_reason,
    }


def figures_changed(old: dict, new: dict) -> bool:
    return any(old.get(k) != new.get(k) for k in FIGURE_KEYS)


def message(payload: dict) -> str:
    """Plain words for the queue and the record page, with the figures side by side."""
    from apps.reconcile.rules import describe

    cur = payload.get("currency", "")
    side = ", ".join(f"{FIGURE_LABELS[k]} {payload.get(k)}" for k in ("delivered", "billed", "recognised", "expected")
                     if payload.get(k) is not None)
    return (f"{payload.get('engagement_code')} {payload.get('period')}: {side} {cur}. "
            f"Rule for {describe(payload.get('contract_type', ''))}; the variance of {payload.get('variance')} {cur} "
            f"is above the tolerance of {payload.get('tolerance')} {cur}. Find the missing or wrong posting, invoice "
            f"or revenue entry and resubmit to check again, or accept the variance with a reason.")


def variance_problem(payload: dict) -> Problem:
    return Problem(REASON, message(payload), [], "", "")


def summary(payload: dict) -> dict:
    cur = payload.get("currency", "")
    return {"title": f"{payload.get('engagement_code')} · {payload.get('period')} variance "
                     f"{payload.get('variance')} {cur}",
            "amount": payload.get("variance"), "currency": cur}


def parse_period(value) -> date | None:
    if not isinstance(value, str) or not PERIOD_RE.match(value):
        return None
    return date(int(value[:4]), int(value[5:7]), 1)


def validate(payload: dict, *, source_kind: str = "", ref=None) -> list[Problem]:
    """The payload's shape (the variance itself is not a validation problem: resubmitting re-checks it)."""
    from apps.canonical.models import Engagement

    problems = []
    code = payload.get("engagement_code")
    if not code or not Engagement.objects.filter(code=code).exists():
        problems.append(Problem("payload_schema_invalid", f"Engagement “{code or '(empty)'}” does not exist.",
                                ["engagement_code"]))
    if parse_period(payload.get("period")) is None:
        problems.append(Problem("payload_schema_invalid",
                                f"Period “{payload.get('period') or '(empty)'}” is not a month (YYYY-MM).", ["period"]))
    reason = payload.get("accepted_variance_reason") or ""
    if not isinstance(reason, str) or len(reason) > 300:
        problems.append(Problem("payload_schema_invalid", "The reason for accepting the variance must be text of at "
                                                          "most 300 characters.", ["accepted_variance_reason"]))
    return problems


def stage_check(ctx) -> None:
    """Recompute this engagement-month; succeed when within the tolerance or when the variance is accepted."""
    from apps.canonical.models import Engagement
    from apps.finance.models import FinancePolicy
    from apps.reconcile import figures, rules

    problems = validate(ctx.payload)
    if problems:
        raise Hold(problems)
    p = ctx.payload
    engagement = Engagement.objects.only("id", "code", "contract_type", "currency").get(code=p["engagement_code"])
    period = parse_period(p["period"])
    tolerance = FinancePolicy.current().reconciliation_tolerance
    row = figures.compute_one(engagement.pk, period)
    f = row.figures if row else rules.Figures(contract_type=engagement.contract_type, currency=engagement.currency,
                                              period=period)
    result = rules.reconcile(f, tolerance)
    reason = (p.get("accepted_variance_reason") or "").strip()
    p.update(payload_for(engagement_id=engagement.pk, engagement_code=engagement.code, period=period, result=result,
                         currency=f.currency, contract_type=f.contract_type, tolerance=tolerance,
                         accepted_variance_reason=reason))
    now = timezone.now().isoformat()
    if not result.over_tolerance:
        ctx.context.pop("accepted", None)
        ctx.context["resolved"] = {"at": now, "variance": p["variance"], "by": "re-check"}
        return
    if reason:
        ctx.context["accepted"] = {"at": now, "variance": p["variance"], "currency": p["currency"],
                                   "reason": reason, **{k: p[k] for k in ("delivered", "billed", "recognised",
                                                                          "expected")}}
        return
    raise Hold([variance_problem(p)])


WORKFLOW = Workflow(
    name=NAME,
    label="Reconciliation",
    stages=[Stage(STAGE, "Check delivered vs billed vs recognised", stage_check)],
    validate=validate,
    owner_teams=OWNER_TEAM,
    default_team=DEFAULT_TEAM,
    base_priority=PRIORITY,
    fix_fields=FIX_FIELDS,
    first_stage_on_restart=STAGE,
    field_labels=FIELD_LABELS,
    summary=summary,
)
