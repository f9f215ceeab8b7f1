"""Actuals to forecast: what was exported (ForecastPeriod, one row per engagement and month) and each export run
(ForecastRefresh: who or what started it, how it went, when its figures were taken)."""

from decimal import Decimal

from django.conf import settings
from django.db import models

from apps.canonical.models import CURRENCY_CHOICES, Engagement

ZERO = Decimal("0")


class ForecastRefresh(models.Model):
    """One export of actuals to the forecasting tool (Anaplan), run by the `actuals_to_forecast` workflow.

    Its sync record does the work (retries, holds, dead letters, the desk); this row keeps what the board shows:
    the last refresh's status and how old the forecast's figures are (`as_of` of the last successful full one)."""

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Schedule"
        ON_DEMAND = "on_demand", "On demand"
        CHANGE_ORDER = "change_order", "Change order"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped (no forecasting connection)"

    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    engagement = models.ForeignKey(Engagement, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="forecast_refreshes",
                                   help_text="Only this engagement's rows (a change order); empty: every engagement")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    # the sync record doing the work; a plain id, not a foreign key: retention archives old records with a raw
    # DELETE (apps/sync/retention.py), and the refresh's own history must outlive them
    sync_record_id = models.BigIntegerField(null=True, blank=True, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    as_of = models.DateTimeField(null=True, blank=True, help_text="When the actuals were rolled up")
    period_from = models.DateField(null=True, blank=True, help_text="First month exported")
    period_to = models.DateField(null=True, blank=True, help_text="Last month exported")
    rows = models.PositiveIntegerField(default=0, help_text="Rows in the file")
    rows_imported = models.PositiveIntegerField(null=True, blank=True, help_text="Rows the forecasting tool took")
    file_name = models.CharField(max_length=200, blank=True)
    file_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    file_sha256 = models.CharField(max_length=64, blank=True)
    task_id = models.CharField(max_length=100, blank=True, help_text="The forecasting tool's import task")
    error = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True, help_text="The import task's result, as the tool reported it")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["-created_at"], name="forecastrefresh_recent"),
            models.Index(fields=["status", "-finished_at"], name="forecastrefresh_status"),
        ]

    def __str__(self):
        return f"forecast refresh #{self.pk} ({self.status})"

    @property
    def scope(self) -> str:
        return self.engagement.code if self.engagement_id and self.engagement else "all engagements"


class ForecastPeriod(models.Model):
    """One engagement's actuals for one month, in the engagement currency, as last exported.

    approved_hours: approved time (not reversed) worked that month.
    billed: what was billed that month (apps/forecast/actuals.py states the rule).
    recognised_revenue: revenue the ERP recognised for that month.
    billed_to_date: billed up to and including that month; backlog = contract_value − billed_to_date."""

    engagement = models.ForeignKey(Engagement, on_delete=models.CASCADE, related_name="forecast_periods")
    period = models.DateField(help_text="First day of the month")
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    approved_hours = models.DecimalField(max_digits=12, decimal_places=2, default=ZERO)
    billed = models.DecimalField(max_digits=18, decimal_places=2, default=ZERO)
    recognised_revenue = models.DecimalField(max_digits=18, decimal_places=2, default=ZERO)
    billed_to_date = models.DecimalField(max_digits=18, decimal_places=2, default=ZERO)
    contract_value = models.DecimalField(max_digits=18, decimal_places=2, default=ZERO)
    backlog = models.DecimalField(max_digits=18, decimal_places=2, default=ZERO)
    refresh = models.ForeignKey(ForecastRefresh, null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="periods", help_text="The refresh that last wrote this row")
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["engagement", "period"]
        constraints = [models.UniqueConstraint(fields=["engagement", "period"], name="forecastperiod_once")]
        indexes = [models.Index(fields=["period"], name="forecastperiod_period")]

    def __str__(self):
        return f"{self.engagement_id} {self.period:%Y-%m}"
