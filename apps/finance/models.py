"""Canonical money objects of delivery-to-cash: time and expenses (PSA-owned), invoices and payments (ERP or
billing engine), recognised revenue (ERP), and the policies and reference data that price and post them.

Money is Decimal with an ISO-4217 currency, never float (apps/finance/money.py holds the rounding rules).
Amounts are kept in the engagement currency and, where the legal entity's base currency differs, also in the
base currency with the rate and the rate's date.
"""

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.canonical.models import CURRENCY_CHOICES, Customer, Engagement, LegalEntity, Milestone


class FinancePolicy(models.Model):
    """Admin-set money policies (one row). `FinancePolicy.current()` always returns it."""

    reconciliation_tolerance = models.DecimalField(
        max_digits=12, decimal_places=2, default=Decimal("0.01"),
        help_text="A reconciliation variance above this (in the engagement currency) becomes an exception")
    default_expense_markup_pct = models.DecimalField(
        max_digits=6, decimal_places=2, default=Decimal("0"),
        help_text="Markup on billable expenses, in percent, unless the engagement sets its own")
    forecast_stale_after_hours = models.PositiveIntegerField(
        default=26, help_text="The forecast is shown as stale when its last good refresh is older than this")
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        verbose_name_plural = "finance policy"

    def __str__(self):
        return "Finance policy"

    @classmethod
    def current(cls) -> "FinancePolicy":
        obj, _ = cls.objects.get_or_create(pk=1)
        return obj


class ExchangeRate(models.Model):
    """1 unit of `from_currency` = `rate` units of `to_currency`, on `rate_date` (the ERP's rate table)."""

    from_currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    to_currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    rate = models.DecimalField(max_digits=18, decimal_places=8)
    rate_date = models.DateField()

    class Meta:
        ordering = ["-rate_date"]
        constraints = [models.UniqueConstraint(fields=["from_currency", "to_currency", "rate_date"],
                                               name="exchangerate_once")]
        indexes = [models.Index(fields=["from_currency", "to_currency", "-rate_date"], name="exchangerate_lookup")]

    def __str__(self):
        return f"1 {self.from_currency} = {self.rate} {self.to_currency} ({self.rate_date})"


class DimensionMapping(models.Model):
    """A PSA service code → the ERP dimensions a billable transaction posts to, per legal entity (subsidiary)."""

    legal_entity = models.ForeignKey(LegalEntity, on_delete=models.CASCADE, related_name="dimension_mappings")
    service_code = models.CharField(max_length=64)
    department_id = models.CharField(max_length=32, help_text="ERP department internal id")
    class_id = models.CharField(max_length=32, help_text="ERP class internal id")
    location_id = models.CharField(max_length=32, help_text="ERP location internal id")
    item_id = models.CharField(max_length=32, blank=True, help_text="ERP service item internal id")
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["legal_entity", "service_code"]
        constraints = [models.UniqueConstraint(fields=["legal_entity", "service_code"], name="dimensionmapping_once")]

    def __str__(self):
        return f"{self.legal_entity.code}/{self.service_code}"


class Priced(models.Model):
    """What a priced line shares: amount in the engagement currency, and in the legal entity's base currency."""

    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES, help_text="Engagement currency")
    amount = models.DecimalField(max_digits=18, decimal_places=2, default=Decimal("0"),
                                 help_text="Billable amount in the engagement currency")
    base_currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES, blank=True)
    base_amount = models.DecimalField(max_digits=18, decimal_places=2, null=True, blank=True)
    fx_rate = models.DecimalField(max_digits=18, decimal_places=8, null=True, blank=True,
                                  help_text="Engagement currency → base currency")
    fx_date = models.DateField(null=True, blank=True)

    class Meta:
        abstract = True


class ApprovedEntry(Priced):
    """What an approved PSA line (time entry or expense) shares: its id in the PSA, the service code that maps to
    ERP dimensions, whether it is billable, when it was approved and posted. Each model keeps its own `Status`
    (same values: priced → posted, or reversed) and `status` field: their labels differ, and a shared one would
    need a migration."""

    source_system = models.CharField(max_length=32)
    source_id = models.CharField(max_length=100)
    service_code = models.CharField(max_length=64, blank=True)
    billable = models.BooleanField(default=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    posted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class TimeEntry(ApprovedEntry):
    """An approved time entry from the PSA, priced with the engagement's rate card and posted to the ERP."""

    class Status(models.TextChoices):
        PRICED = "priced", "Priced, not posted yet"
        POSTED = "posted", "Posted"
        REVERSED = "reversed", "Reversed (unapproved or deleted in the PSA)"

    source_version = models.CharField(max_length=40, blank=True, help_text="The PSA's updated_at for this version")
    engagement = models.ForeignKey(Engagement, on_delete=models.PROTECT, related_name="time_entries")
    person = models.CharField(max_length=200)
    role = models.CharField(max_length=100)
    task = models.CharField(max_length=200, blank=True)
    work_date = models.DateField()
    hours = models.DecimalField(max_digits=8, decimal_places=2)
    write_off_hours = models.DecimalField(max_digits=8, decimal_places=2, default=Decimal("0"))
    rate = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0"))
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PRICED)

    class Meta:
        verbose_name_plural = "time entries"
        constraints = [models.UniqueConstraint(fields=["source_system", "source_id"], name="timeentry_once")]
        indexes = [models.Index(fields=["engagement", "work_date"], name="timeentry_engagement_date")]

    def __str__(self):
        return f"{self.source_system}:{self.source_id} {self.hours} h"


class ExpenseEntry(ApprovedEntry):
    """An approved expense from the PSA, converted to the engagement currency with markup, posted to the ERP."""

    class Status(models.TextChoices):
        PRICED = "priced", "Priced, not posted yet"
        POSTED = "posted", "Posted"
        REVERSED = "reversed", "Reversed"

    source_version = models.CharField(max_length=40, blank=True)
    engagement = models.ForeignKey(Engagement, on_delete=models.PROTECT, related_name="expenses")
    person = models.CharField(max_length=200, blank=True)
    category = models.CharField(max_length=100)
    incurred_on = models.DateField()
    spent_amount = models.DecimalField(max_digits=18, decimal_places=2, help_text="As spent")
    spent_currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    markup_pct = models.DecimalField(max_digits=6, decimal_places=2, default=Decimal("0"))
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PRICED)

    class Meta:
        verbose_name_plural = "expense entries"
        constraints = [models.UniqueConstraint(fields=["source_system", "source_id"], name="expenseentry_once")]
        indexes = [models.Index(fields=["engagement", "incurred_on"], name="expense_engagement_date")]

    def __str__(self):
        return f"{self.source_system}:{self.source_id} {self.spent_amount} {self.spent_currency}"


class Invoice(models.Model):
    """An invoice in the ERP or the billing engine. Its status only moves forward (see STATUS_RANK)."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        OPEN = "open", "Open"
        PAYMENT_FAILED = "payment_failed", "Payment failed"
        DISPUTED = "disputed", "Disputed"
        PAID = "paid", "Paid"
        UNCOLLECTIBLE = "uncollectible", "Uncollectible"
        VOID = "void", "Void"

    class Kind(models.TextChoices):
        MILESTONE = "milestone", "Milestone"
        TIME_AND_EXPENSE = "time_and_expense", "Time & expense"
        FIXED_FEE = "fixed_fee", "Fixed fee instalment"
        RETAINER = "retainer", "Retainer"

    engagement = models.ForeignKey(Engagement, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="invoices")
    customer = models.ForeignKey(Customer, null=True, blank=True, on_delete=models.PROTECT, related_name="invoices")
    milestone = models.OneToOneField(Milestone, null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="invoice", help_text="One invoice per milestone")
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.MILESTONE)
    source_system = models.CharField(max_length=32, help_text="netsuite or stripe")
    external_id = models.CharField(max_length=100, blank=True, help_text="The id in that system")
    number = models.CharField(max_length=100, blank=True, help_text="The invoice number the customer sees")
    idempotency_key = models.CharField(max_length=200, unique=True, null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    source_updated_at = models.DateTimeField(null=True, blank=True,
                                             help_text="The source's time for the state stored here")
    period = models.DateField(null=True, blank=True, help_text="First day of the month billed")
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    total = models.DecimalField(max_digits=18, decimal_places=2, default=Decimal("0"))
    amount_paid = models.DecimalField(max_digits=18, decimal_places=2, default=Decimal("0"))
    amount_due = models.DecimalField(max_digits=18, decimal_places=2, default=Decimal("0"))
    base_currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES, blank=True)
    base_total = models.DecimalField(max_digits=18, decimal_places=2, null=True, blank=True)
    fx_rate = models.DecimalField(max_digits=18, decimal_places=8, null=True, blank=True)
    fx_date = models.DateField(null=True, blank=True)
    issued_on = models.DateField(null=True, blank=True)
    due_on = models.DateField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # a later state never goes back to an earlier one because an older event arrived late
    STATUS_RANK = {"draft": 0, "open": 1, "payment_failed": 2, "disputed": 3, "paid": 4, "uncollectible": 4,
                   "void": 5}

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["source_system", "external_id"], condition=~Q(external_id=""),
                                    name="invoice_external_once"),
        ]
        indexes = [
            models.Index(fields=["engagement", "period"], name="invoice_engagement_period"),
            models.Index(fields=["status", "due_on"], name="invoice_status_due"),
            models.Index(fields=["customer", "status"], name="invoice_customer_status"),
        ]

    def __str__(self):
        return self.number or f"{self.source_system}:{self.external_id or self.pk}"


class InvoiceLine(models.Model):
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    description = models.CharField(max_length=300)
    quantity = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("1"))
    unit_amount = models.DecimalField(max_digits=18, decimal_places=2)
    amount = models.DecimalField(max_digits=18, decimal_places=2)
    time_entry = models.ForeignKey(TimeEntry, null=True, blank=True, on_delete=models.SET_NULL)
    expense = models.ForeignKey(ExpenseEntry, null=True, blank=True, on_delete=models.SET_NULL)

    def __str__(self):
        return f"{self.description}: {self.amount}"


class Payment(models.Model):
    """A payment (or failed attempt, refund) against an invoice, as the ERP or billing engine reports it."""

    class Status(models.TextChoices):
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        REFUNDED = "refunded", "Refunded"

    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="payments")
    source_system = models.CharField(max_length=32)
    external_id = models.CharField(max_length=100)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.SUCCEEDED)
    amount = models.DecimalField(max_digits=18, decimal_places=2)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    received_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-received_at"]
        constraints = [models.UniqueConstraint(fields=["source_system", "external_id"], name="payment_once")]

    def __str__(self):
        return f"{self.source_system}:{self.external_id} {self.amount} {self.currency}"


class RevenueEntry(models.Model):
    """Revenue the ERP recognised for an engagement in a month (ERP-owned)."""

    engagement = models.ForeignKey(Engagement, on_delete=models.PROTECT, related_name="revenue")
    period = models.DateField(help_text="First day of the month")
    amount = models.DecimalField(max_digits=18, decimal_places=2)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    source_system = models.CharField(max_length=32)
    external_id = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source_system", "external_id"], name="revenueentry_once")]
        indexes = [models.Index(fields=["engagement", "period"], name="revenue_engagement_period")]

    def __str__(self):
        return f"{self.engagement_id} {self.period:%Y-%m} {self.amount} {self.currency}"
