"""Writes to canonical objects. Every write names the role of the system the data came from (system of record).

The quote-to-project hot path (a lookup per new opportunity, a new customer and a new engagement, each with its
link) is written as plain SQL built from the models' own field definitions: one statement per object, link
included, instead of the ORM's three to four (bench/own_time.py: the ORM's query building was most of a
record's own time). Updates of existing objects stay on the ORM."""

from __future__ import annotations

from django.contrib.contenttypes.models import ContentType
from django.db import connection, models
from django.db.models.functions import Upper
from django.utils import timezone

from . import normalise
from .models import Customer, Engagement, ExternalId, Milestone
from .ownership import assert_may_write

LINK_CONFLICT = "ON CONFLICT (content_type_id, object_id, system, object_type) DO UPDATE SET external_id = " \
                "EXCLUDED.external_id"


def external_id_get(*, obj: models.Model, system: str, object_type: str) -> str | None:
    ct = ContentType.objects.get_for_model(obj)
    return (ExternalId.objects.filter(content_type=ct, object_id=obj.pk, system=system, object_type=object_type)
            .values_list("external_id", flat=True).first())


def external_id_link(*, obj: models.Model, system: str, object_type: str, external_id: str) -> ExternalId:
    """Link obj to its id in an external system. Idempotent; linking is allowed for any system (it writes no field)."""
    ct = ContentType.objects.get_for_model(obj)
    [link] = external_ids_link([ExternalId(content_type=ct, object_id=obj.pk, system=system, object_type=object_type,
                                           external_id=str(external_id))])
    return link


def external_ids_link(links: list[ExternalId]) -> list[ExternalId]:
    """Write many links at once: one INSERT … ON CONFLICT DO UPDATE; a link an object already has to that system
    and type takes the new id. Returns the links with their ids."""
    if not links:
        return links
    rows, params = [], []
    for link in links:
        rows.append("(%s, %s, %s, %s, %s, now())")
        params += [link.content_type_id, link.object_id, link.system, link.object_type, str(link.external_id)]
    with connection.cursor() as cur:
        cur.execute("INSERT INTO canonical_externalid (content_type_id, object_id, system, object_type, external_id, "
                    f"created_at) VALUES {', '.join(rows)} {LINK_CONFLICT} RETURNING id", params)
        for link, (pk,) in zip(links, cur.fetchall()):
            link.pk = pk
    return links


def _columns(model: type[models.Model]) -> str:
    return ", ".join(f't."{f.column}"' for f in model._meta.concrete_fields)


def _from_row(model: type[models.Model], row) -> models.Model:
    """A model instance from a row of _columns(model), converted as the ORM would."""
    values = list(row)
    for i, f in enumerate(model._meta.concrete_fields):
        for convert in f.get_db_converters(connection):
            values[i] = convert(values[i], f, connection)
    return model.from_db(connection.alias, [f.attname for f in model._meta.concrete_fields], values)


def object_by_external_id(*, model: type[models.Model], system: str, object_type: str, external_id: str):
    ct = ContentType.objects.get_for_model(model)
    with connection.cursor() as cur:
        cur.execute(f"SELECT {_columns(model)} FROM {model._meta.db_table} t JOIN canonical_externalid x "
                    "ON x.object_id = t.id WHERE x.content_type_id = %s AND x.system = %s AND x.object_type = %s "
                    "AND x.external_id = %s LIMIT 1", [ct.pk, system, object_type, str(external_id)])
        row = cur.fetchone()
    return _from_row(model, row) if row else None


def customer_find_duplicates(*, name: str, tax_id: str, country: str = "", exclude_pk: int | None = None):
    """Customers with the same name (any case) and tax id (compared normalised, as Customer.tax_id is stored): a
    suspected duplicate of a new account."""
    if not name or not tax_id:
        return Customer.objects.none()
    try:
        country = normalise.country_code(country)
    except ValueError:
        country = ""  # the tax id is then compared without the prefix a country would add
    try:
        tax_id = normalise.tax_id(tax_id, country)
    except ValueError:
        return Customer.objects.none()  # no stored customer has a tax id that cannot be normalised
    qs = Customer.objects.annotate(uname=Upper("name")).filter(uname=name.strip().upper(), tax_id=tax_id)
    qs = qs.order_by("name", "pk")
    return qs.exclude(pk=exclude_pk) if exclude_pk else qs


def account_customer_and_duplicates(*, system: str, account_id: str, name: str, tax_id: str,
                                    limit: int = 3) -> tuple[Customer | None, list[Customer]]:
    """The customer already linked to the CRM account (if any) and up to `limit` other customers with the same
    name (any case) and tax id — customer_find_duplicates and object_by_external_id in one statement (the
    duplicate check of every new opportunity)."""
    ct = ContentType.objects.get_for_model(Customer)
    cols = _columns(Customer)
    own = ("SELECT object_id FROM canonical_externalid WHERE content_type_id = %s AND system = %s "
           "AND object_type = 'account' AND external_id = %s")
    own_params = [ct.pk, system, str(account_id or "")]
    with connection.cursor() as cur:
        cur.execute(f"(SELECT true, {cols} FROM canonical_customer t WHERE t.id IN ({own}) LIMIT 1) UNION ALL "
                    f"(SELECT false, {cols} FROM canonical_customer t WHERE upper(t.name) = %s AND t.tax_id = %s "
                    f"AND t.id NOT IN ({own}) ORDER BY t.name, t.id LIMIT %s)",
                    [*own_params, name.strip().upper(), tax_id.strip(), *own_params, limit])
        rows = cur.fetchall()
    mine = [_from_row(Customer, r[1:]) for r in rows if r[0]]
    return (mine[0] if mine else None), [_from_row(Customer, r[1:]) for r in rows if not r[0]]


def _insert_linked(obj: models.Model, *, system: str, object_type: str, external_id: str,
                   code_prefix: str = "") -> None:
    """INSERT obj and its link to `external_id` in one statement (both or neither: a concurrent creator of the same
    link meets the unique constraint and nothing is written). With code_prefix, obj's `code` is the prefix and its
    new pk, zero-padded to six digits (ENG-000123), set in the same statement."""
    opts = obj._meta
    cols, values, params = [], [], []
    for f in opts.concrete_fields:
        if f.primary_key or (code_prefix and f.name == "code"):
            continue
        cols.append(f'"{f.column}"')
        values.append("%s")
        params.append(f.get_db_prep_save(f.pre_save(obj, True), connection))
    ct = ContentType.objects.get_for_model(obj)
    table = opts.db_table
    if code_prefix:
        new_id = "(SELECT id FROM n)"
        head = f"WITH n AS (SELECT nextval(pg_get_serial_sequence('{table}', 'id')) AS id), "
        cols = ['"id"', '"code"', *cols]
        values = [new_id, f"%s || lpad({new_id}::text, greatest(6, length({new_id}::text)), '0')", *values]
        params = [code_prefix, *params]
    else:
        head = "WITH "
    sql = (f"{head}o AS (INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(values)}) RETURNING id) "
           "INSERT INTO canonical_externalid (content_type_id, object_id, system, object_type, external_id, created_at) "
           f"SELECT %s, o.id, %s, %s, %s, now() FROM o {LINK_CONFLICT} RETURNING object_id")
    with connection.cursor() as cur:
        cur.execute(sql, [*params, ct.pk, system, object_type, str(external_id)])
        (obj.pk,) = cur.fetchone()
    obj._state.adding, obj._state.db = False, connection.alias
    if code_prefix:
        obj.code = f"{code_prefix}{obj.pk:06d}"


def customer_upsert(*, source_role: str, system: str, account_id: str, fields: dict,
                    customer: Customer | None = None, known_new: bool = False) -> Customer:
    """Create or update the customer known in `system` as `account_id` (CRM-owned fields only). `known_new`: the
    caller has just looked the account up and found no customer (a concurrent creator still meets the link's
    unique constraint)."""
    assert_may_write("customer", source_role)
    if customer is None and not known_new:
        customer = object_by_external_id(model=Customer, system=system, object_type="account",
                                         external_id=account_id)
    if customer is None:
        customer = Customer(**fields)
        _insert_linked(customer, system=system, object_type="account", external_id=account_id)
        return customer
    changed = [k for k, v in fields.items() if getattr(customer, k) != v]
    for k in changed:
        setattr(customer, k, fields[k])
    if changed:
        customer.save(update_fields=[*changed, "updated_at"])
    external_id_link(obj=customer, system=system, object_type="account", external_id=account_id)
    return customer


def engagement_upsert_from_opportunity(*, source_role: str, system: str, opportunity_id: str, fields: dict) -> Engagement:
    """Create or update the engagement of a CRM opportunity. A new one is numbered ENG-<pk> as it is inserted."""
    assert_may_write("engagement", source_role)
    engagement = object_by_external_id(model=Engagement, system=system, object_type="opportunity",
                                       external_id=opportunity_id)
    if engagement is None:
        engagement = Engagement(**fields)
        _insert_linked(engagement, system=system, object_type="opportunity", external_id=opportunity_id,
                       code_prefix="ENG-")
        return engagement
    for k, v in fields.items():
        setattr(engagement, k, v)
    engagement.save()
    external_id_link(obj=engagement, system=system, object_type="opportunity", external_id=opportunity_id)
    return engagement


def milestone_complete(*, engagement: Engagement, source_key: str, fields: dict, source_role: str) -> Milestone:
    """The PSA completed a milestone: upsert it (by engagement and PSA key) as completed; one already invoiced
    stays invoiced, so a redelivered completion never invoices it twice."""
    assert_may_write("milestone", source_role)
    milestone, created = Milestone.objects.get_or_create(engagement=engagement, source_key=source_key,
                                                         defaults={**fields, "status": Milestone.Status.COMPLETED})
    if not created:
        for k, v in fields.items():
            setattr(milestone, k, v)
        if milestone.status != Milestone.Status.INVOICED:
            milestone.status = Milestone.Status.COMPLETED
        milestone.save()
    return milestone


def milestone_mark_invoiced(*, milestone_pk: int) -> None:
    """Its invoice is recorded: a later completion of the same milestone keeps it invoiced."""
    Milestone.objects.filter(pk=milestone_pk).update(status=Milestone.Status.INVOICED, updated_at=timezone.now())
