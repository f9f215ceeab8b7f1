"""SLA configuration: business calendars (per legal entity) and the SLA policies records are measured against.

The SLA *state* of a record lives on the record itself (SyncRecord.sla_due_at / sla_state / sla_notified_state)
and is written by `apps.sla.services.evaluate`, run every minute by the scheduler.
"""

from __future__ import annotations

import zoneinfo
from datetime import time

from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from apps.sync.workflows.catalog import all_workflows

from . import clock

WEEKDAYS = [(0, "Monday"), (1, "Tuesday"), (2, "Wednesday"), (3, "Thursday"), (4, "Friday"), (5, "Saturday"),
            (6, "Sunday")]
WEEKDAY_SHORT = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


def default_weekdays() -> list[int]:
    return [0, 1, 2, 3, 4]


def validate_timezone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"“{value}” is not an IANA timezone (e.g. Europe/Berlin, America/New_York, UTC).")


class BusinessCalendar(models.Model):
    """When a legal entity works: timezone, working hours, working weekdays and (below) holidays."""

    name = models.CharField(max_length=100, unique=True)
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone],
                                help_text="IANA timezone, e.g. Europe/Berlin")
    work_start = models.TimeField(default=time(9, 0))
    work_end = models.TimeField(default=time(17, 0), help_text="00:00 means midnight at the end of the day")
    working_weekdays = ArrayField(models.PositiveSmallIntegerField(choices=WEEKDAYS), default=default_weekdays,
                                  help_text="0 = Monday … 6 = Sunday")
    is_default = models.BooleanField(
        default=False, help_text="Used for records without a legal entity or whose entity has no calendar")
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-is_default", "name"]
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=Q(is_default=True),
                                    name="businesscalendar_one_default"),
        ]

    def __str__(self):
        return self.name

    def clean(self):
        if self.work_start and self.work_end and self.work_end != time(0) and self.work_end <= self.work_start:
            raise ValidationError({"work_end": "The working day must end after it starts (00:00 = end of day)."})
        days = self.working_weekdays or []
        if not days:
            raise ValidationError({"working_weekdays": "Choose at least one working weekday."})
        if any(d not in range(7) for d in days):
            raise ValidationError({"working_weekdays": "Weekdays are 0 (Monday) … 6 (Sunday)."})

    @property
    def weekdays_display(self) -> str:
        return ", ".join(WEEKDAY_SHORT[d] for d in sorted(self.working_weekdays or []) if 0 <= d <= 6)

    @property
    def hours_display(self) -> str:
        end = "24:00" if self.work_end == time(0) else self.work_end.strftime("%H:%M")
        return f"{self.work_start:%H:%M}–{end} {self.timezone}"

    def as_clock(self, holidays=None) -> clock.Calendar:
        """The pure calendar the clock functions use (holidays loaded unless given)."""
        if holidays is None:
            holidays = self.holidays.values_list("date", flat=True)
        return clock.Calendar(timezone=self.timezone, work_start=self.work_start, work_end=self.work_end,
                              weekdays=frozenset(self.working_weekdays), holidays=frozenset(holidays), name=self.name)


class Holiday(models.Model):
    """A non-working day of one calendar (in the calendar's own timezone)."""

    calendar = models.ForeignKey(BusinessCalendar, on_delete=models.CASCADE, related_name="holidays")
    date = models.DateField()
    name = models.CharField(max_length=100)

    class Meta:
        ordering = ["calendar", "date"]
        constraints = [models.UniqueConstraint(fields=["calendar", "date"], name="holiday_once_per_calendar")]

    def __str__(self):
        return f"{self.date:%Y-%m-%d} {self.name}"


class EntityCalendar(models.Model):
    """Which business calendar a legal entity's SLAs are measured in."""

    legal_entity = models.OneToOneField("canonical.LegalEntity", on_delete=models.CASCADE,
                                        related_name="sla_calendar")
    calendar = models.ForeignKey(BusinessCalendar, on_delete=models.PROTECT, related_name="entities")

    class Meta:
        ordering = ["legal_entity__code"]
        verbose_name = "legal entity calendar"

    def __str__(self):
        return f"{self.legal_entity.code} → {self.calendar.name}"


class SlaPolicy(models.Model):
    """How long a record may take.

    flow: from the record's creation until it is past `stage` of `workflow` (blank stage: until it succeeds).
    exception: from the moment a record is held until it leaves held/dead, per priority.
    Blank workflow / priority 0 mean "any"; the most specific matching policy wins (priority before workflow).
    """

    class Kind(models.TextChoices):
        FLOW = "flow", "Flow (created → stage done)"
        EXCEPTION = "exception", "Exception (held → resolved)"

    class Priority(models.IntegerChoices):
        ANY = 0, "Any"
        P1 = 1, "P1"
        P2 = 2, "P2"
        P3 = 3, "P3"

    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=12, choices=Kind.choices)
    workflow = models.CharField(max_length=40, blank=True, help_text="Blank: any workflow (exception policies)")
    stage = models.CharField(max_length=40, blank=True,
                             help_text="Flow: the stage that must be done, e.g. psa_project. Blank: until the "
                                       "record succeeds")
    priority = models.PositiveSmallIntegerField(choices=Priority.choices, default=Priority.ANY)
    duration_minutes = models.PositiveIntegerField(
        validators=[MinValueValidator(1)],
        help_text="Business minutes if business time (1 business day = 480 on a 09:00–17:00 calendar)")
    business_time = models.BooleanField(default=True,
                                        help_text="Count only working hours of the legal entity's calendar")
    due_soon_percent = models.PositiveSmallIntegerField(
        default=75, validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="“Due soon” once this share of the duration has elapsed")
    active = models.BooleanField(default=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["kind", "workflow", "stage", "priority"]
        verbose_name = "SLA policy"
        verbose_name_plural = "SLA policies"
        constraints = [
            models.UniqueConstraint(fields=["kind", "workflow", "stage", "priority"], condition=Q(active=True),
                                    name="slapolicy_one_active"),
            models.CheckConstraint(condition=Q(duration_minutes__gte=1), name="slapolicy_duration_positive"),
            models.CheckConstraint(condition=Q(due_soon_percent__gte=1, due_soon_percent__lte=100),
                                   name="slapolicy_due_soon_percent"),
            models.CheckConstraint(condition=Q(kind="flow") | Q(stage=""), name="slapolicy_exception_no_stage"),
        ]

    def __str__(self):
        return self.name

    def clean(self):
        errors = {}
        if self.kind == self.Kind.EXCEPTION and self.stage:
            errors["stage"] = "Exception policies apply at any stage; leave the stage blank."
        if self.kind == self.Kind.FLOW and self.stage and not self.workflow:
            errors["stage"] = "A stage belongs to a workflow: choose the workflow too."
        known = {wf.name: wf.stage_names() for wf in all_workflows()}
        if self.workflow in known and self.stage and self.stage not in known[self.workflow]:
            errors["stage"] = (f"“{self.stage}” is not a stage of {self.workflow}: "
                               f"{', '.join(known[self.workflow])}.")
        if errors:
            raise ValidationError(errors)

    @property
    def duration_display(self) -> str:
        m = self.duration_minutes or 0
        unit = "business " if self.business_time else ""
        if self.business_time and m % 480 == 0:
            n = m // 480
            return f"{n} business day{'s' if n != 1 else ''}"
        if m % 60 == 0:
            n = m // 60
            return f"{n} {unit}hour{'s' if n != 1 else ''}"
        return f"{m} {unit}minutes"
