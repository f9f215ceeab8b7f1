"""What a bulk action's preview and its run both check for each record: is it still held, may the actor act on it
(desk.actor_scope), does it pass its workflow's rules — for thousands of records at a time.

Records are read in chunks with only the columns needed; the rules run once per record with their reference
data loaded once; the duplicate-customer rule's lookups are made for a whole chunk in one query per kind.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterable

from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db.models.functions import Upper

from apps.canonical.models import Customer, ExternalId

from .desk import actor_scope, assign_scope
from .errors import NotAllowed
from .models import SyncRecord
from .payload import get_path
from .record_states import needs_validation
from .workflows import quote_to_project
from .workflows.base import Problem
from .workflows.catalog import all_workflows, get_workflow

EXAMPLES = 5

# why a record was not acted on (besides the workflow's own reason codes)
NOT_HELD = "not_held"
NOT_ALLOWED = "not_allowed"
CHANGED = "changed_since_preview"
SKIP_LABELS = {
    NOT_HELD: "no longer held",
    NOT_ALLOWED: "your role cannot act on it (or, assigning, the assignee's)",
    CHANGED: "changed since preview",
}


class BulkError(ValueError):
    """The bulk action cannot be previewed or confirmed as asked (bad parameters, nothing selected…)."""


def check_actor(actor, action: str) -> None:
    if not actor.has_perm("sync.resubmit_syncrecord"):
        raise NotAllowed("Your role cannot act on held records.")
    if action == "ignore" and not actor.has_perm("sync.ignore_syncrecord"):
        raise NotAllowed("Your role cannot resolve records without resubmitting them.")


def action_scope(actor, action: str, params: dict) -> Callable[[str], bool]:
    """owner_team → may this bulk action touch a record of that team: the actor must be able to act on it
    (desk's rule) and, for an assignment, the assignee too (desk.assign_scope, as for a single record)."""
    if action == "assign":
        assignee = get_user_model().objects.filter(pk=(params or {}).get("assignee_id")).first()
        return assign_scope(actor, assignee)
    return actor_scope(actor)


def chunked(seq: list, size: int) -> Iterable[list]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


def skip_reason(row: dict, may_act) -> str | None:
    """Why the record cannot be acted on (not held, not the actor's team), or None."""
    if row["status"] not in SyncRecord.ACTIONABLE:
        return NOT_HELD
    if not may_act(row["owner_team"]):
        return NOT_ALLOWED
    return None


def fix_fields_for(workflow_names) -> list[str]:
    """The fields one fix may set on records of these workflows: those every one of them offers on its fix form,
    in the first one's order. A duplicate resolution names one customer, so it is decided record by record."""
    workflows = [get_workflow(name) for name in sorted(set(workflow_names))]
    if not workflows:
        return []
    common = set.intersection(*(set(wf.fix_fields) for wf in workflows))
    return [f for f in workflows[0].fix_fields if f in common and f != "duplicate_resolution"]


def any_fix_field() -> set[str]:
    return {f for wf in all_workflows() for f in wf.fix_fields}


VALUE_FIELDS = ("id", "workflow", "stage", "status", "owner_team", "priority", "version")
PAYLOAD_FIELDS = ("current_payload", "context__fetched", "source_connection__kind")


def load_rows(ids: list[int], *, with_payload: bool, extra: tuple = ()) -> dict[int, dict]:
    fields = VALUE_FIELDS + (PAYLOAD_FIELDS if with_payload else ()) + extra
    rows = {}
    for row in SyncRecord.objects.filter(pk__in=ids).order_by().values(*fields):
        if with_payload:
            row["fetched"] = bool(row.pop("context__fetched"))
            row["kind"] = row.pop("source_connection__kind")
        rows[row["id"]] = row
    return rows


class Tally:
    """reason → count and a few example ids (and a message), for the preview and the run's log."""

    def __init__(self):
        self.counts: dict[str, int] = defaultdict(int)
        self.examples: dict[str, list[int]] = defaultdict(list)
        self.messages: dict[str, str] = {}

    def add(self, reason: str, record_id: int, message: str = "") -> None:
        self.counts[reason] += 1
        if len(self.examples[reason]) < EXAMPLES:
            self.examples[reason].append(record_id)
        if message and reason not in self.messages:
            self.messages[reason] = message[:300]

    def merge(self, other: "Tally") -> None:
        for reason, n in other.counts.items():
            self.counts[reason] += n
            self.examples[reason].extend(other.examples[reason][:EXAMPLES - len(self.examples[reason])])
            if reason in other.messages:
                self.messages.setdefault(reason, other.messages[reason])

    def total(self) -> int:
        return sum(self.counts.values())

    def rows(self) -> list[dict]:
        return [{"reason": r, "label": SKIP_LABELS.get(r, r.replace("_", " ")), "count": n,
                 "examples": self.examples[r], "message": self.messages.get(r, "")}
                for r, n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))]


# ---------------------------------------------------------------- the workflows' rules, for many records


def validate_records(rows: list[dict], payloads: list[dict], refs: dict | None = None) -> list[list[Problem]]:
    """Problems per row (rows carry workflow, stage, fetched, kind), as record_resubmit would find them:
    quote-to-project's records batched (validate_many), other workflows' one by one. `refs` keeps reference data
    loaded by one chunk for the next ones."""
    refs = {} if refs is None else refs
    out: list[list[Problem]] = [[] for _ in rows]
    batched: list[int] = []
    for i, row in enumerate(rows):
        if not needs_validation(row["stage"], row["fetched"]):
            continue
        wf = get_workflow(row["workflow"])
        if wf.validate is quote_to_project.validate:
            batched.append(i)
        else:
            out[i] = wf.validate(payloads[i], source_kind=row["kind"])
    if batched:
        ref = refs.get(quote_to_project.Reference) or refs.setdefault(quote_to_project.Reference,
                                                                       quote_to_project.Reference.load())
        for i, problems in zip(batched, validate_many([(payloads[i], rows[i]["kind"]) for i in batched], ref=ref)):
            out[i] = problems
    return out


def validate_many(items: list[tuple[dict, str]], *, ref: quote_to_project.Reference | None = None
                  ) -> list[list[Problem]]:
    """quote_to_project.validate() for many (payload, source_kind) pairs, with the same result for each.

    Every rule runs through validate() itself (with the reference data loaded once, they make no query), but
    the duplicate-customer rule's lookups, made here for all payloads with one query per kind of lookup and
    answered by the same quote_to_project.duplicate_problems()."""
    ref = ref or quote_to_project.Reference.load()
    results: list[list[Problem]] = []
    lookups: list[tuple | None] = []
    for payload, source_kind in items:
        # the duplicate rule switched off ("new" = "confirmed a different customer"): it is answered below
        results.append(quote_to_project.validate({**payload, "duplicate_resolution": "new"},
                                                 source_kind=source_kind, ref=ref))
        lookups.append(quote_to_project.duplicate_lookup(payload))
    link_pks = {lk[1] for lk in lookups if lk and lk[0] == "link" and lk[1] is not None}
    existing = set(Customer.objects.filter(pk__in=link_pks).values_list("pk", flat=True)) if link_pks else set()
    candidates = _same_name_and_tax_id({lk[1] for lk in lookups if lk and lk[0] == "dup"})
    own = _own_customers({(kind, str(get_path(payload, "account.id")))
                          for (payload, kind), lk in zip(items, lookups)
                          if lk and lk[0] == "dup" and candidates.get(lk[1]) and get_path(payload, "account.id")})
    for problems, (payload, kind), lk in zip(results, items, lookups):
        if lk is None:
            continue
        if lk[0] == "link":
            problems += quote_to_project.duplicate_problems(lk, link_exists=lk[1] in existing)
            continue
        account_id = get_path(payload, "account.id")
        own_pk = own.get((kind, str(account_id))) if account_id else None
        dups = [(pk, name) for pk, name in candidates.get(lk[1], []) if pk != own_pk][:3]
        problems += quote_to_project.duplicate_problems(lk, duplicates=dups)
    return results


def _same_name_and_tax_id(keys: set[tuple[str, str]]) -> dict[tuple[str, str], list[tuple[int, str]]]:
    """(upper(name), tax id) → customers (pk, name), in the order the single-record check lists them."""
    found: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    if not keys:
        return found
    # a superset by name and by tax id, narrowed to the exact pairs here (uses the customer_dup_check index)
    rows = (Customer.objects.annotate(uname=Upper("name"))
            .filter(uname__in={k[0] for k in keys}, tax_id__in={k[1] for k in keys})
            .order_by("name", "pk").values_list("uname", "tax_id", "pk", "name"))
    for uname, tax_id, pk, name in rows:
        if (uname, tax_id) in keys:
            found[(uname, tax_id)].append((pk, name))
    return found


def _own_customers(accounts: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """(system, account id) → the customer already linked to that account (never its own duplicate)."""
    own: dict[tuple[str, str], int] = {}
    if not accounts:
        return own
    ct = ContentType.objects.get_for_model(Customer)
    for system, external_id, object_id in (
            ExternalId.objects.filter(content_type=ct, object_type="account", system__in={s for s, _ in accounts},
                                      external_id__in={e for _, e in accounts})
            .order_by("pk").values_list("system", "external_id", "object_id")):
        own.setdefault((system, external_id), object_id)
    return own
