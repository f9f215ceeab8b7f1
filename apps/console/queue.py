"""The exception queue's reads: filters that compose (and live in the URL), facet counts, sorting, grouping by
error signature, and search by any id. Plain functions over querysets, used by the views, bulk actions and bench.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from django.core.paginator import Paginator
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import Count, F, Max, Min, Q, QuerySet, Sum
from django.db.models.functions import Upper
from django.utils import timezone

from apps.sync.models import Connection, SyncRecord
from apps.sync.privacy import may_see_personal_data, personal_match


AGES = {"1h": timedelta(hours=1), "4h": timedelta(hours=4), "24h": timedelta(hours=24), "3d": timedelta(days=3),
        "7d": timedelta(days=7)}
SORTS = {
    # key: (order_by, label)
    "priority": (["priority", F("sla_due_at").asc(nulls_last=True), "held_at", "id"], "Priority, then SLA due"),
    "sla": ([F("sla_due_at").asc(nulls_last=True), "priority", "id"], "SLA due first"),
    "age": (["held_at", "id"], "Oldest first"),
    "-age": (["-held_at", "-id"], "Newest first"),
    "amount": ([F("amount").desc(nulls_last=True), "id"], "Largest amount first"),
    "title": (["title", "id"], "Title"),
}
FILTER_KEYS = ["workflow", "stage", "reason", "source", "target", "team", "assignee", "priority", "sla", "age",
               "amount_min", "amount_max", "q", "status", "signature"]
FACETS = ["reason_code", "workflow", "owner_team", "priority", "sla_state"]
# a held record's target_system is the system that refused it (a connection kind) or, when one of Handoff's own
# rules held it, the role of the system its stage calls
TARGETS = [*Connection.Kind.values, *Connection.Role.values]


class CountedPaginator(Paginator):
    """A paginator told the row count (the facet query already has it) instead of running COUNT(*) again."""

    def __init__(self, object_list, per_page, *, count: int):
        super().__init__(object_list, per_page)
        self._known_count = count

    @cached_property
    def count(self) -> int:
        return self._known_count


@dataclass
class QueueParams:
    values: dict
    user: object = None

    def get(self, key: str) -> str:
        return (self.values.get(key) or "").strip()


def default_team(user) -> str:
    """PMO and finance ops see their own team's queue by default; admins and viewers see all."""
    from apps.sync.desk import user_teams

    teams = user_teams(user) if user is not None else set()
    if "integration_admin" in teams or not teams:
        return "any"
    return sorted(teams)[0]


def _decimal(value: str):
    from decimal import Decimal, InvalidOperation

    try:
        return Decimal(value)
    except (InvalidOperation, ValueError):
        return None


def search_filter(q: str, user=None) -> Q:
    """Any id (exact, case-free) or part of a title / customer name; for a user who sees personal data masked,
    never a match on it (the hit would confirm it)."""
    q = q.strip()
    key = q.upper()[:200]
    cond = Q(search_keys__contains=[key])
    if len(q) >= 3:
        cond |= Q(title_upper__contains=key)
    if user is not None and not may_see_personal_data(user):
        cond &= ~personal_match(key)
    return cond


def with_title_upper(qs: QuerySet) -> QuerySet:
    return qs.annotate(title_upper=Upper("title"))


def held_queryset(params: dict, user=None) -> QuerySet:
    """Held records (and dead letters) matching the queue's filters. `params` is the URL query as a dict."""
    p = QueueParams(params, user)
    status = p.get("status")
    qs = SyncRecord.objects.filter(status__in=[status] if status in ("held", "dead") else SyncRecord.ACTIONABLE)
    simple = {"workflow": "workflow", "stage": "stage", "reason": "reason_code", "target": "target_system",
              "signature": "error_signature", "sla": "sla_state"}
    for key, field in simple.items():
        if v := p.get(key):
            qs = qs.filter(**{field: v})
    if v := p.get("source"):
        qs = qs.filter(source_connection__slug=v)
    team = p.get("team") or (default_team(user) if user is not None else "any")
    if team != "any":
        qs = qs.filter(owner_team=team)
    assignee = p.get("assignee")
    if assignee == "me" and user is not None:
        qs = qs.filter(assignee=user)
    elif assignee == "unassigned":
        qs = qs.filter(assignee__isnull=True)
    elif assignee and assignee not in ("anyone", "me"):
        qs = qs.filter(assignee__username=assignee)
    if (v := p.get("priority")) in ("1", "2", "3"):
        qs = qs.filter(priority=int(v))
    if (v := p.get("age")) in AGES:
        qs = qs.filter(held_at__lte=timezone.now() - AGES[v])
    if (v := _decimal(p.get("amount_min"))) is not None:
        qs = qs.filter(amount__gte=v)
    if (v := _decimal(p.get("amount_max"))) is not None:
        qs = qs.filter(amount__lte=v)
    if q := p.get("q"):
        qs = with_title_upper(qs).filter(search_filter(q, user))
    return qs


def effective_team(params: dict, user) -> str:
    return (params.get("team") or "").strip() or default_team(user)


def sorted_page(qs: QuerySet, sort: str, page: int, per_page: int = 50):
    order, _ = SORTS.get(sort, SORTS["priority"])
    rows = list(qs.select_related("source_connection", "assignee").order_by(*order)
                [(page - 1) * per_page: page * per_page])
    return rows


def facet_counts(qs: QuerySet) -> dict[str, list[tuple[str, int]]]:
    """Counts per value of every facet over the filtered rows, in ONE grouped query (index-only on desk_facets:
    no ordering, and COUNT(*) rather than COUNT(id), which would need the table)."""
    return _facet_lists(qs.order_by().values(*FACETS).annotate(n=Count("*")))


def _facet_lists(rows) -> dict[str, list[tuple[str, int]]]:
    """Rows of counts per combination of the facets' values (dicts with every facet and `n`) → per facet, its
    values with their counts, largest first."""
    out: dict[str, dict] = {f: {} for f in FACETS}
    for row in rows:
        for f in FACETS:
            out[f][row[f]] = out[f].get(row[f], 0) + row["n"]
    return {f: sorted(d.items(), key=lambda t: (-t[1], str(t[0]))) for f, d in out.items()}


GROUP_KEYS = ["error_signature", "reason_code", "failed_system", "workflow", "stage"]
# the columns of desk_signature_groups, in its key order: the five group keys, then the facets not among them
PASS_KEYS = GROUP_KEYS + [f for f in FACETS if f not in GROUP_KEYS]


def facets_and_groups(qs: QuerySet, limit: int = 100) -> tuple[dict[str, list[tuple[str, int]]], list[dict]]:
    """The grouped view's facet counts and its groups (held records grouped by error signature: count, oldest,
    amount at stake, a sample message), from ONE pass over the filtered rows, in one statement.

    `g` groups the rows by all eight keys in the key order of desk_signature_groups, so PostgreSQL aggregates them
    as a (parallel) index-only scan goes by: no sort and no hash of 100k rows. `r` rolls those few thousand
    partial groups up both ways with `GROUPING SETS ((the five facets), (the five group keys))`; the facet rows
    and only the `limit` largest signature groups come back. (GROUPING SETS straight over the rows sorted all
    ~100k actionable rows of a 10M table twice: 175 ms; two grouped queries read them twice. The ndistinct
    statistics syncrecord_group_ndistinct tell the planner the signatures make a few thousand groups, not
    ~90,000.) Records without a signature are dropped after grouping: as a WHERE on the rows,
    `error_signature <> ''` made the planner expect 1 % of them (99 % of the table has none)."""
    inner, params = (qs.order_by().values(*PASS_KEYS)
                     .annotate(n=Count("*"), oldest=Min("held_at"), amount=Sum("amount"), cmin=Min("currency"),
                               cmax=Max("currency"), sample=Min("id"))
                     .query.sql_with_params())
    keys = ", ".join(PASS_KEYS)
    with transaction.atomic(), connection.cursor() as cur:
        # Gathering the workers' partial groups costs the planner 0.1 a row by default: for the ~6,000 it expects
        # (team, priority and SLA state multiply the signature's groups; really ~3,000) it then keeps the pass in
        # one process — 53 ms instead of 38 ms at 10M. For this statement only.
        cur.execute("SET LOCAL parallel_tuple_cost = 0.01")
        cur.execute(
            f"WITH g AS ({inner}), "
            f"r AS (SELECT GROUPING(error_signature) AS facet_row, {keys}, SUM(n) AS n, MIN(oldest) AS oldest, "
            f"SUM(amount) AS amount, MIN(cmin) AS cmin, MAX(cmax) AS cmax, MIN(sample) AS sample FROM g "
            f"GROUP BY GROUPING SETS (({', '.join(FACETS)}), ({', '.join(GROUP_KEYS)}))) "
            f"(SELECT * FROM r WHERE facet_row = 1) UNION ALL "
            f"(SELECT * FROM r WHERE facet_row = 0 AND error_signature <> '' "
            f"ORDER BY n DESC, oldest, error_signature LIMIT %s)", [*params, limit])
        result = cur.fetchall()
        cur.execute("SET LOCAL parallel_tuple_cost TO DEFAULT")
    facet_rows, rows = [], []
    for facet_row, *values in result:
        row = dict(zip(PASS_KEYS, values))
        oldest, amount, currency_min, currency_max, sample_id = values[len(PASS_KEYS) + 1:]
        row["n"] = int(values[len(PASS_KEYS)])
        if facet_row:
            facet_rows.append(row)
        else:
            rows.append({**{k: row[k] for k in GROUP_KEYS}, "n": row["n"], "oldest": oldest, "amount": amount,
                         "currency": currency_min if currency_min == currency_max else "mixed currencies",
                         "sample_id": sample_id})
    samples = dict(SyncRecord.objects.filter(id__in=[r["sample_id"] for r in rows]).values_list("id", "message"))
    from apps.sync.queue_columns import normalise_message

    for r in rows:
        r["message"] = normalise_message(samples.get(r["sample_id"], ""))
    return _facet_lists(facet_rows), rows


def groups(qs: QuerySet, limit: int = 100) -> list[dict]:
    """Held records grouped by error signature (see facets_and_groups)."""
    return facets_and_groups(qs, limit)[1]


def global_search(q: str, limit: int = 50, user=None) -> list[SyncRecord]:
    """Any record, any status, by any id or part of its title: held records and dead letters first (the ones a
    person can act on), then the others, each newest first.

    Both halves are one UNION ALL under one LIMIT: PostgreSQL runs the second half only if the first found fewer
    than `limit` rows. The actionable half reads the small partial indexes (desk_title_trgm), so one common word
    ("Acme": 1 record in 80, 125k of 10M) no longer fetches and sorts every matching row of the whole table."""
    if not q.strip():
        return []
    base = with_title_upper(SyncRecord.objects.all()).filter(search_filter(q, user)).order_by("-updated_at", "-id")
    actionable = base.filter(status__in=SyncRecord.ACTIONABLE).values_list("id", flat=True)[:limit]
    others = base.exclude(status__in=SyncRecord.ACTIONABLE).values_list("id", flat=True)[:limit]
    ids = list(actionable.union(others, all=True).order_by()[:limit])
    by_id = SyncRecord.objects.select_related("source_connection").in_bulk(ids)
    return [by_id[i] for i in ids if i in by_id]
