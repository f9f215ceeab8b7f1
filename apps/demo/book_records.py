"""The sync records of the demo book: what the workflows would have left behind for the engagements, time,
expenses, milestones and invoices of the book (book.py), each finished a few minutes to a day after its source."""

from __future__ import annotations

from datetime import timedelta

from apps.sync.models import SyncRecord
from apps.sync.workflows.catalog import WORKFLOWS

from .book_reference import aware


def sync_records(book, engagements, data) -> list[SyncRecord]:
    """The sync records that carried the book (the history the boards and KPIs show), all succeeded."""
    rng = book.rng
    kantata, stripe, netsuite = book.conns["kantata"], book.conns["stripe"], book.conns["netsuite"]
    recs = []

    stages = {w: WORKFLOWS[w].stages[-1].name for w in ("quote_to_project", "time_to_billing", "milestone_to_invoice",
                                                       "invoice_payment_to_crm")}

    def rec(workflow, conn, key, title, created, minutes, amount=None, currency="", code=""):
        r = SyncRecord(workflow=workflow, stage=stages[workflow],
                       search_keys=sorted({k.upper() for k in (key, key.split(":", 1)[-1], code) if k}),
                       status=SyncRecord.Status.SUCCEEDED, source_connection=conn,
                       source_key=key, title=title[:300], amount=amount, currency=currency,
                       owner_team="finance_ops" if workflow != "quote_to_project" else "pmo",
                       priority=1 if workflow != "quote_to_project" else 2)
        r._created = book.past(created)
        r._completed = book.past(created + timedelta(minutes=minutes))
        recs.append(r)

    for e in engagements:
        created = aware(e.start_date - timedelta(days=rng.randrange(2, 9)), rng.randrange(8, 17))
        key = f"deal:{e._crm_id}" if e._crm == "hubspot" else f"opportunity:{e._crm_id}"  # as the intake keys
        rec("quote_to_project", book.conns[e._crm], key, e.name, created,
            rng.choice([3, 8, 25, 70, 190, 420]), e.contract_value, e.currency, e.code)
    for t in data["times"]:
        rec("time_to_billing", kantata, f"time_entry:{t.source_id}", f"{t.engagement.code} · {t.person} "
            f"{t.hours} h {t.work_date}", t.approved_at, rng.choice([1, 2, 4, 30, 240, 1500]), t.amount,
            t.currency, t.engagement.code)
    for x in data["expenses"]:
        rec("time_to_billing", kantata, f"expense:{x.source_id}", f"{x.engagement.code} · {x.category} "
            f"{x.incurred_on}", x.approved_at, rng.choice([1, 3, 60]), x.amount, x.currency, x.engagement.code)
    for inv in data["invoices"]:
        conn = stripe if inv.source_system == "stripe" else netsuite
        if inv.milestone_id or getattr(inv, "_milestone", None):
            rec("milestone_to_invoice", kantata, f"story:{inv.milestone.source_key}",
                f"{inv.engagement.code} · {inv.milestone.name}", inv.milestone.completed_at,
                rng.choice([4, 15, 90, 600]), inv.total, inv.currency, inv.engagement.code)
        rec("invoice_payment_to_crm", conn, f"invoice:{inv.external_id}", f"{inv.number} {inv.status}",
            inv.source_updated_at, rng.choice([1, 2, 5, 45]), inv.total, inv.currency, inv.engagement.code)
    return recs
