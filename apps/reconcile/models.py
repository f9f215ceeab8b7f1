"""A reconciliation run and its lines: per engagement and month, delivered vs billed vs recognised (rules.py).

A run is a snapshot: its lines keep the figures as they were when it ran. The report shows the latest completed
run; lines of older runs are pruned (services.KEEP_RUNS), the runs themselves stay as history.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.canonical.models import CURRENCY_CHOICES, Engagement


class ReconciliationRun(models.Model):
    class Trigger(models.TextChoices):
        NIGHTLY = "nightly", "Nightly"
        MANUAL = "manual", "Run now"
        COMMAND = "command", "Command line"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        SKIPPED = "skipped", "Skipped (another run was in progress)"
        FAILED = "failed", "Failed"

    trigger = models.CharField(max_length=12, choices=Trigger.choices)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    period_from = models.DateField(help_text="First month reconciled (first day)")
    period_to = models.DateField(help_text="Last month reconciled (first day)")
    tolerance = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True,
                                    help_text="The tolerance the run applied")
    lines = models.PositiveIntegerField(default=0, help_text="Engagement-months checked")
    over_tolerance = models.PositiveIntegerField(default=0, help_text="Lines with a variance above the tolerance")
    opened = models.PositiveIntegerField(default=0, help_text="Exceptions opened (new or re-opened)")
    updated = models.PositiveIntegerField(default=0, help_text="Open exceptions whose figures changed")
    resolved = models.PositiveIntegerField(default=0, help_text="Exceptions resolved: the variance is gone")
    message = models.TextField(blank=True, help_text="Why it failed or was skipped; warnings")
    rq_job_id = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "-finished_at"], name="reconrun_status")]

    def __str__(self):
        return f"Reconciliation #{self.pk} {self.period_from:%Y-%m}…{self.period_to:%Y-%m} ({self.status})"

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None

    @property
    def in_flight(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)


class ReconciliationLine(models.Model):
    """One engagement and month in one run: the three figures side by side and the variance."""

    run = models.ForeignKey(ReconciliationRun, on_delete=models.CASCADE, related_name="line_set")
    engagement = models.ForeignKey(Engagement, on_delete=models.CASCADE, related_name="+")
    engagement_code = models.CharField(max_length=32, help_text="As it was when the run ran (sorting, CSV)")
    period = models.DateField(help_text="First day of the month")
    contract_type = models.CharField(max_length=16, choices=Engagement.ContractType.choices)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    delivered = models.DecimalField(max_digits=18, decimal_places=2)
    billed = models.DecimalField(max_digits=18, decimal_places=2)
    recognised = models.DecimalField(max_digits=18, decimal_places=2)
    expected = models.DecimalField(max_digits=18, decimal_places=2, null=True, blank=True,
                                   help_text="Retainer: the fee the month must bill")
    compared = models.CharField(max_length=60, help_text="The figures that must agree, comma-separated")
    variance = models.DecimalField(max_digits=18, decimal_places=2)
    over_tolerance = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "period", "engagement_code"], name="reconline_once"),
        ]
        indexes = [
            # the report: one run, newest month first, by engagement; filtered by type / currency / over tolerance
            models.Index(fields=["run", "contract_type", "period", "engagement_code"], name="reconline_type"),
            models.Index(fields=["run", "currency", "period", "engagement_code"], name="reconline_currency"),
            models.Index(fields=["run", "period", "engagement_code"], condition=Q(over_tolerance=True),
                         name="reconline_over"),
        ]

    def __str__(self):
        return f"{self.engagement_code} {self.period:%Y-%m} variance {self.variance} {self.currency}"

    @property
    def source_key(self) -> str:
        return source_key(self.engagement_code, self.period)


def source_key(engagement_code: str, period) -> str:
    """The exception record of one engagement-month: one per (engagement, period), whatever the run."""
    return f"recon:{engagement_code}:{period:%Y-%m}"
