"""Amendments (change orders) to an engagement: applied once per amendment id with its before/after kept in
EngagementChange, and never over a newer one. The CRM owns the engagement's commercial terms, so only a CRM may
amend them (apps/canonical/ownership.py).

A redelivery with the same values changes nothing; an amendment approved before the newest one already applied
is superseded (returned as such, the engagement untouched); a change held for finance ops (its value is below what
is already invoiced) shows in the engagement's history as held until it is applied.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from django.utils import timezone

from .models import Engagement, EngagementChange, RateCard
from .ownership import assert_may_write


def snapshot(e: Engagement) -> dict:
    """The amendable terms of an engagement, as an EngagementChange keeps them before and after."""
    return {"contract_value": str(e.contract_value),
            "start_date": e.start_date.isoformat() if e.start_date else None,
            "end_date": e.end_date.isoformat() if e.end_date else None,
            "rate_card": e.rate_card.name if e.rate_card_id else None,
            "billing_schedule": e.billing_schedule}


def amendment_apply(*, engagement_id: int, change_id: str, source_system: str, source_role: str,
                    approved_at: datetime | None, values: dict) -> tuple[str, EngagementChange]:
    """Apply one amendment to the engagement (locked), keeping before/after. Returns (outcome, change):
    "applied"; "already_applied" (this amendment with these values is in already: nothing changes);
    "superseded" (an amendment approved later is already applied, or this is an older version of this one)."""
    assert_may_write("engagement", source_role)
    e = Engagement.objects.select_for_update(of=("self",)).select_related("rate_card").get(pk=engagement_id)
    changes = EngagementChange.objects.filter(engagement=e)
    existing = changes.filter(change_id=change_id).first()
    if approved_at is not None:
        newer = (changes.filter(status=EngagementChange.Status.APPLIED, approved_at__gt=approved_at)
                 .exclude(change_id=change_id).order_by("-approved_at").first())
        if newer is not None:
            return "superseded", newer
        if existing and existing.status == EngagementChange.Status.APPLIED and existing.approved_at \
                and approved_at < existing.approved_at:
            return "superseded", existing
    if existing and existing.status == EngagementChange.Status.APPLIED \
            and {k: existing.after.get(k) for k in values} == values:
        return "already_applied", existing
    before = snapshot(e)
    for fname, value in values.items():
        if fname == "contract_value":
            e.contract_value = Decimal(value)
        elif fname in ("start_date", "end_date"):
            setattr(e, fname, date.fromisoformat(value))
        elif fname == "rate_card":
            e.rate_card = RateCard.objects.get(name=value)
        else:
            setattr(e, fname, value)
    e.save()
    change, _ = EngagementChange.objects.update_or_create(
        engagement=e, change_id=change_id,
        defaults={"source_system": source_system, "approved_at": approved_at, "before": before, "after": snapshot(e),
                  "status": EngagementChange.Status.APPLIED, "applied_at": timezone.now()})
    return "applied", change


def amendment_hold(*, engagement_id: int, change_id: str, source_system: str, approved_at: datetime | None,
                   values: dict) -> None:
    """Keep a change held for finance ops in the engagement's history (unless it was applied already)."""
    e = Engagement.objects.select_related("rate_card").get(pk=engagement_id)
    if EngagementChange.objects.filter(engagement=e, change_id=change_id,
                                       status=EngagementChange.Status.APPLIED).exists():
        return
    before = snapshot(e)
    EngagementChange.objects.update_or_create(
        engagement=e, change_id=change_id,
        defaults={"source_system": source_system, "approved_at": approved_at, "before": before,
                  "after": {**before, **values}, "status": EngagementChange.Status.HELD, "applied_at": None})
