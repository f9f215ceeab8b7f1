"""Loopback simulators of the external systems (demo and tests): what each received, and its fault settings."""

from django.db import models
from django.db.models import Q


class SandboxSystem(models.Model):
    """One simulated system: the token it accepts and the faults it injects."""

    system = models.CharField(max_length=32, primary_key=True)
    token = models.CharField(max_length=200)
    error_rate = models.FloatField(default=0.0, help_text="Share of calls answered 500")
    rate_limit_rate = models.FloatField(default=0.0, help_text="Share of calls answered 429 with Retry-After")
    latency_ms = models.PositiveIntegerField(default=0)
    fail_next_count = models.PositiveIntegerField(default=0, help_text="Fail exactly the next N calls")
    fail_next_status = models.PositiveSmallIntegerField(default=503)
    retry_after_seconds = models.PositiveIntegerField(default=1)
    timeout_rate = models.FloatField(
        default=0.0, help_text="Share of calls that hang past the client's timeout, then fail (nothing is written)")
    lost_response_rate = models.FloatField(
        default=0.0, help_text="Share of calls served in full (the write commits) whose response then hangs past "
                               "the client's timeout: the caller never learns it succeeded")
    hang_ms = models.PositiveIntegerField(
        default=0, help_text="How long a timed-out or lost call hangs (0: HANDOFF_HTTP_TIMEOUT + 1 s)")
    settings = models.JSONField(default=dict, blank=True)

    def __str__(self):
        return self.system


class SandboxObject(models.Model):
    """An object a sandbox holds (a HubSpot deal, a NetSuite customer, a Kantata workspace…)."""

    system = models.CharField(max_length=32)
    object_type = models.CharField(max_length=40)
    external_key = models.CharField(max_length=200, null=True, blank=True)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    writes = models.PositiveIntegerField(default=1, help_text="How many writes this object received")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["system", "object_type", "external_key"],
                                    condition=Q(external_key__isnull=False), name="sandboxobject_eid"),
        ]
        indexes = [models.Index(fields=["system", "object_type"], name="sandboxobject_type")]

    def __str__(self):
        return f"{self.system}:{self.object_type}:{self.pk}"
