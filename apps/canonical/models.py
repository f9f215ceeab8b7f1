"""Canonical objects: the firm's own view of customers and engagements, whatever the external systems call them."""

import uuid
from decimal import Decimal

from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models.functions import Upper

# The currencies the firm trades in, offered in lists and forms; a legal entity enables a subset of them. Whether a
# code is ISO 4217 at all is normalise.currency_code (the maintained list), not this one.
CURRENCIES = ["USD", "EUR", "GBP", "CAD", "AUD", "CHF", "JPY", "SEK", "INR", "SGD"]
CURRENCY_CHOICES = [(c, c) for c in CURRENCIES]


class Timestamped(models.Model):
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class LegalEntity(Timestamped):
    """A subsidiary of the firm that contracts and invoices: its country, base currency and the currencies it may bill in."""

    code = models.CharField(max_length=16, unique=True, help_text="e.g. US01")
    name = models.CharField(max_length=200)
    country = models.CharField(max_length=2, help_text="ISO-3166 alpha-2")
    base_currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    enabled_currencies = ArrayField(models.CharField(max_length=3), default=list, blank=True)
    erp_subsidiary_id = models.CharField(max_length=32, help_text="The subsidiary's internal id in the ERP")
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["code"]
        verbose_name_plural = "legal entities"

    def __str__(self):
        return f"{self.code} — {self.name}"

    def bills_in(self, currency: str) -> bool:
        return currency == self.base_currency or currency in self.enabled_currencies


class PaymentTerms(Timestamped):
    """Billing terms a customer can be put on (NET30…), with their id in the ERP."""

    code = models.CharField(max_length=32, unique=True)
    name = models.CharField(max_length=100)
    days = models.PositiveSmallIntegerField(default=30)
    erp_terms_id = models.CharField(max_length=32)

    class Meta:
        ordering = ["days", "code"]
        verbose_name_plural = "payment terms"

    def __str__(self):
        return self.code


class Customer(Timestamped):
    """A customer account (CRM-owned), with its place in the account hierarchy and its tax profile."""

    key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False,
                           help_text="Handoff's own key; the external id Handoff upserts this customer by")
    name = models.CharField(max_length=300)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    tax_id = models.CharField(max_length=64, blank=True)
    country = models.CharField(max_length=2, blank=True)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES, blank=True)
    payment_terms = models.ForeignKey(PaymentTerms, null=True, blank=True, on_delete=models.PROTECT)
    legal_entity = models.ForeignKey(LegalEntity, null=True, blank=True, on_delete=models.PROTECT)
    bill_to = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]
        indexes = [
            # used by the duplicate-customer check: same name (any case) and tax id
            models.Index(Upper("name"), "tax_id", name="customer_dup_check"),
        ]

    def __str__(self):
        return self.name


class RateCard(Timestamped):
    """A price list of roles for one currency."""

    name = models.CharField(max_length=200, unique=True)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)

    def __str__(self):
        return f"{self.name} ({self.currency})"


class RateCardLine(models.Model):
    """One role's hourly rate on a rate card."""

    rate_card = models.ForeignKey(RateCard, on_delete=models.CASCADE, related_name="lines")
    role = models.CharField(max_length=100)
    rate = models.DecimalField(max_digits=12, decimal_places=2)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["rate_card", "role"], name="ratecardline_unique_role")]

    def __str__(self):
        return f"{self.role}: {self.rate} {self.rate_card.currency}"


class Engagement(Timestamped):
    """What was sold (from a won opportunity) and is now delivered: contract terms, legal entity and rate card."""

    class ContractType(models.TextChoices):
        FIXED_FEE = "fixed_fee", "Fixed fee"
        TIME_AND_MATERIALS = "t_and_m", "Time & materials"
        MILESTONE = "milestone", "Milestone"
        RETAINER = "retainer", "Retainer"

    key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    code = models.CharField(max_length=32, unique=True, help_text="Engagement number, e.g. ENG-000123")
    name = models.CharField(max_length=300)
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="engagements")
    legal_entity = models.ForeignKey(LegalEntity, on_delete=models.PROTECT)
    contract_type = models.CharField(max_length=16, choices=ContractType.choices)
    contract_value = models.DecimalField(max_digits=18, decimal_places=2, default=Decimal("0"))
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    start_date = models.DateField(null=True, blank=True)
    end_date = models.DateField(null=True, blank=True)
    service_line = models.CharField(max_length=100, blank=True)
    project_template = models.CharField(max_length=100, blank=True)
    billing_schedule = models.CharField(max_length=100, blank=True)
    rate_card = models.ForeignKey(RateCard, null=True, blank=True, on_delete=models.PROTECT)
    correlation_id = models.UUIDField(db_index=True)

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        CLOSED = "closed", "Closed"

    class BillingChannel(models.TextChoices):
        ERP = "erp", "ERP (NetSuite)"
        STRIPE = "stripe", "Billing engine (Stripe)"

    status = models.CharField(max_length=12, choices=Status.choices, default=Status.ACTIVE)
    budget_hours = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True,
                                       help_text="Planned hours (PSA budget)")
    tm_cap = models.DecimalField(max_digits=18, decimal_places=2, null=True, blank=True,
                                 help_text="T&M not-to-exceed amount in the engagement currency (none: uncapped)")
    expense_markup_pct = models.DecimalField(max_digits=6, decimal_places=2, null=True, blank=True,
                                             help_text="Markup on billable expenses, in percent (none: the policy default)")
    retainer_fee = models.DecimalField(max_digits=18, decimal_places=2, null=True, blank=True,
                                       help_text="Retainer: the fee billed each month")
    billing_channel = models.CharField(max_length=8, choices=BillingChannel.choices, default=BillingChannel.ERP)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.code} {self.name}"


class Milestone(Timestamped):
    """A billable milestone of an engagement."""

    engagement = models.ForeignKey(Engagement, on_delete=models.CASCADE, related_name="milestones")
    name = models.CharField(max_length=200)
    amount = models.DecimalField(max_digits=18, decimal_places=2)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    due_date = models.DateField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Status(models.TextChoices):
        PLANNED = "planned", "Planned"
        COMPLETED = "completed", "Completed"
        INVOICED = "invoiced", "Invoiced"

    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PLANNED)
    source_key = models.CharField(max_length=100, blank=True, help_text="The PSA's id for it (e.g. Kantata story id)")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["engagement", "source_key"], condition=~models.Q(source_key=""),
                                    name="milestone_source_once"),
        ]

    def __str__(self):
        return f"{self.name} ({self.amount} {self.currency})"


class EngagementChange(models.Model):
    """A change order (CRM amendment) applied to an engagement, with the values before and after: the history."""

    class Status(models.TextChoices):
        APPLIED = "applied", "Applied"
        HELD = "held", "Held for finance ops"

    engagement = models.ForeignKey(Engagement, on_delete=models.CASCADE, related_name="changes")
    change_id = models.CharField(max_length=100, help_text="The CRM's id of the approved amendment")
    source_system = models.CharField(max_length=32)
    approved_at = models.DateTimeField(null=True, blank=True)
    before = models.JSONField(default=dict)
    after = models.JSONField(default=dict)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.APPLIED)
    applied_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["engagement", "change_id"], name="engagementchange_once")]

    def __str__(self):
        return f"{self.engagement.code} change {self.change_id}"


class ExternalId(models.Model):
    """The id a canonical object has in one external system. One object has at most one id per system and type."""

    system = models.CharField(max_length=32, help_text="Connection kind: hubspot, salesforce, netsuite, kantata…")
    object_type = models.CharField(max_length=32, help_text="The system's own type: company, deal, customer, job, workspace…")
    external_id = models.CharField(max_length=128)
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE)
    object_id = models.PositiveBigIntegerField()
    target = GenericForeignKey("content_type", "object_id")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["system", "object_type", "external_id"], name="externalid_unique"),
            models.UniqueConstraint(fields=["content_type", "object_id", "system", "object_type"],
                                    name="externalid_one_per_object"),
        ]
        indexes = [
            # "find any record by any id": the search box looks up external ids directly
            models.Index(fields=["external_id"], name="externalid_lookup"),
        ]

    def __str__(self):
        return f"{self.system}:{self.object_type}:{self.external_id}"
