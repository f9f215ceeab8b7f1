"""Writes to canonical objects. Every write names the role of the system the data came from (system of record)."""

from __future__ import annotations

from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models.functions import Upper

from .models import Customer, Engagement, ExternalId
from .ownership import assert_may_write


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
    """Write many links at once: one INSERT … ON CONFLICT DO UPDATE (not update_or_create's select + insert/update
    and savepoints per link); a link an object already has to that system and type takes the new id."""
    return ExternalId.objects.bulk_create(
        links, update_conflicts=True, unique_fields=["content_type", "object_id", "system", "object_type"],
        update_fields=["external_id"])


def object_by_external_id(*, model: type[models.Model], system: str, object_type: str, external_id: str):
    ct = ContentType.objects.get_for_model(model)
    link = ExternalId.objects.filter(content_type=ct, system=system, object_type=object_type,
                                     external_id=str(external_id)).values("object_id")[:1]
    return model.objects.filter(pk=models.Subquery(link)).first()  # one query, not the link and then the object


def customer_find_duplicates(*, name: str, tax_id: str, exclude_pk: int | None = None):
    """Customers with the same name (any case) and tax id: a suspected duplicate of a new account."""
    if not name or not tax_id:
        return Customer.objects.none()
    qs = Customer.objects.annotate(uname=Upper("name")).filter(uname=name.strip().upper(), tax_id=tax_id.strip())
    qs = qs.order_by("name", "pk")
    return qs.exclude(pk=exclude_pk) if exclude_pk else qs


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
        customer = Customer.objects.create(**fields)
    else:
        changed = [k for k, v in fields.items() if getattr(customer, k) != v]
        for k in changed:
            setattr(customer, k, fields[k])
        if changed:
            customer.save(update_fields=[*changed, "updated_at"])
    external_id_link(obj=customer, system=system, object_type="account", external_id=account_id)
    return customer


def engagement_upsert_from_opportunity(*, source_role: str, system: str, opportunity_id: str, fields: dict) -> Engagement:
    assert_may_write("engagement", source_role)
    engagement = object_by_external_id(model=Engagement, system=system, object_type="opportunity",
                                       external_id=opportunity_id)
    if engagement is None:
        engagement = Engagement(**fields)
        engagement.code = f"TMP-{engagement.key.hex[:20]}"  # unique until the pk-based number is known
        engagement.save()
        engagement.code = f"ENG-{engagement.pk:06d}"
        engagement.save(update_fields=["code"])
    else:
        for k, v in fields.items():
            setattr(engagement, k, v)
        engagement.save()
    external_id_link(obj=engagement, system=system, object_type="opportunity", external_id=opportunity_id)
    return engagement
