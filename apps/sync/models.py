"""Sync state: connected systems, every inbound callback, every run, every record moving through a workflow,
every call made for it, and every human action on it. PostgreSQL is the truth; Redis only wakes workers up."""

import uuid

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import BrinIndex, GinIndex, OpClass
from django.db.models.functions import Upper
from django.db import models
from django.utils import timezone
from django.db.models import F, Q

from apps.core.encryption import EncryptedJSONField, EncryptedTextField


class Connection(models.Model):
    """One configured external system: what it is, how to call it, how it signs what it sends us."""

    class Kind(models.TextChoices):
        HUBSPOT = "hubspot", "HubSpot"
        SALESFORCE = "salesforce", "Salesforce"
        NETSUITE = "netsuite", "NetSuite"
        KANTATA = "kantata", "Kantata"
        STRIPE = "stripe", "Stripe"
        ANAPLAN = "anaplan", "Anaplan"

    class Role(models.TextChoices):
        CRM = "crm", "CRM"
        PSA = "psa", "PSA"
        ERP = "erp", "ERP"
        BILLING = "billing", "Billing"
        FORECAST = "forecast", "Forecasting"

    slug = models.SlugField(unique=True, help_text="Used in the callback URL: /api/v1/callbacks/<slug>/")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    role = models.CharField(max_length=16, choices=Role.choices)
    base_url = models.URLField(max_length=300, help_text="Root of the system's REST API")
    # encrypted at rest (apps/core/encryption.py): the columns hold Fernet tokens, Python sees the values
    credentials = EncryptedJSONField(default=dict, blank=True,
                                     help_text='Outbound auth, e.g. {"access_token": "…"}; never shown in the console')
    inbound_secret = EncryptedTextField(blank=True, help_text="HubSpot: the app's client secret (signs webhooks v3)")
    organization_id = models.CharField(max_length=18, blank=True,
                                       help_text="Salesforce: the org id Outbound Messages must carry")
    # systems that do not sign their callbacks (Salesforce) put a per-connection secret in the callback URL
    # (apps/sync/callback_secrets.py): only its SHA-256 is kept, and the previous one for a grace period
    callback_secret_hash = models.CharField(max_length=64, blank=True,
                                            help_text="SHA-256 of the secret in this connection's callback URL")
    callback_secret_previous_hash = models.CharField(max_length=64, blank=True)
    callback_secret_previous_until = models.DateTimeField(null=True, blank=True,
                                                          help_text="Until when the previous URL secret is accepted")
    settings = models.JSONField(default=dict, blank=True,
                                help_text='Per-system options, e.g. {"closed_won_stages": ["closedwon"]}')
    enabled = models.BooleanField(default=True)
    paused = models.BooleanField(default=False, help_text="Paused: records needing this system wait (they do not fail)")
    paused_reason = models.CharField(max_length=300, blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    paused_by = models.CharField(max_length=16, blank=True, help_text="admin, or circuit (opened by failures)")
    consecutive_failures = models.PositiveIntegerField(default=0)
    circuit_threshold = models.PositiveSmallIntegerField(
        default=5, help_text="Consecutive transient failures that open the circuit (pause the connection)")
    circuit_cooldown_seconds = models.PositiveIntegerField(
        default=30, help_text="How long an open circuit waits before a probe call may close it")
    max_attempts = models.PositiveSmallIntegerField(default=5, help_text="Transient failures retried this often")
    backoff_base_seconds = models.FloatField(default=2.0)
    backoff_cap_seconds = models.FloatField(default=300.0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self):
        return self.name


class InboundEvent(models.Model):
    """One callback event exactly as received — accepted, duplicate, ignored or rejected (with why)."""

    class Status(models.TextChoices):
        RECEIVED = "received", "Received"  # verified and stored, waiting for the inbox job
        PROCESSED = "processed", "Processed"  # turned into (or linked to) a sync record
        IGNORED = "ignored", "Ignored"  # verified, but not an event any workflow acts on
        REJECTED = "rejected", "Rejected"  # refused with a 4xx; kept so an admin can see why

    connection = models.ForeignKey(Connection, null=True, blank=True, on_delete=models.PROTECT, related_name="events")
    connection_slug = models.CharField(max_length=50, help_text="As given in the URL, even when unknown")
    event_id = models.CharField(max_length=200, blank=True)
    event_type = models.CharField(max_length=100, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    raw_body = models.TextField(blank=True)
    headers = models.JSONField(default=dict, blank=True)
    verified = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=Status.choices)
    http_status = models.PositiveSmallIntegerField()
    reason = models.TextField(blank=True, help_text="Why it was rejected or ignored")
    deliveries = models.PositiveIntegerField(default=1, help_text="How often the system delivered this event")
    # what the intake parsed out of it, for the inbox job to turn into a record
    workflow = models.CharField(max_length=40, blank=True)
    source_key = models.CharField(max_length=200, blank=True)
    title = models.CharField(max_length=300, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    record = models.ForeignKey("SyncRecord", null=True, blank=True, on_delete=models.SET_NULL, related_name="events")
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at"]
        constraints = [
            # stored once: a redelivery of a verified event only bumps `deliveries`
            models.UniqueConstraint(fields=["connection", "event_id"], condition=Q(verified=True),
                                    name="inboundevent_once"),
        ]
        indexes = [
            # the inbox job claims received events oldest first
            models.Index(fields=["received_at"], condition=Q(status="received"), name="inboundevent_inbox"),
            models.Index(fields=["status", "-received_at"], name="inboundevent_status"),
        ]

    def __str__(self):
        return f"{self.connection_slug}:{self.event_id or '-'} ({self.status})"


class SyncRun(models.Model):
    """One execution of a background job (inbox intake, a workflow drain, the sweeper), NetBox-Job-like."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        ERRORED = "errored", "Errored"

    kind = models.CharField(max_length=50)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    counts = models.JSONField(default=dict, blank=True)
    log = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    rq_job_id = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["kind", "-created_at"], name="syncrun_kind")]

    def __str__(self):
        return f"{self.kind} #{self.pk} ({self.status})"

    @property
    def duration(self):
        if self.started_at and self.completed_at:
            return self.completed_at - self.started_at
        return None


class SyncRecord(models.Model):
    """One business record moving through a workflow, stage by stage, until it succeeds or a person must act."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        IN_PROGRESS = "in_progress", "In progress"
        RETRYING = "retrying", "Retrying"
        HELD = "held", "Held"
        SUCCEEDED = "succeeded", "Succeeded"
        IGNORED = "ignored", "Ignored"
        DEAD = "dead", "Dead letter"

    # states a worker may claim (with a due time); states that end the record's journey
    CLAIMABLE = (Status.PENDING, Status.RETRYING)
    TERMINAL = (Status.SUCCEEDED, Status.IGNORED, Status.DEAD)
    ACTIONABLE = (Status.HELD, Status.DEAD)

    class Team(models.TextChoices):
        PMO = "pmo", "PMO"
        FINANCE_OPS = "finance_ops", "Finance ops"
        INTEGRATION = "integration_admin", "Integration admin"

    workflow = models.CharField(max_length=40)
    stage = models.CharField(max_length=40)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    reason_code = models.CharField(max_length=60, blank=True)
    message = models.TextField(blank=True, help_text="Plain-language reason, naming the field")
    fault_fields = ArrayField(models.CharField(max_length=60), default=list, blank=True)
    failed_system = models.CharField(max_length=32, blank=True, help_text="The system that rejected it, if any")
    system_message = models.TextField(blank=True, help_text="That system's own message")
    owner_team = models.CharField(max_length=20, choices=Team.choices, default=Team.PMO)
    priority = models.PositiveSmallIntegerField(default=2, help_text="1 = money at stake … 3 = reference data")
    attempts = models.PositiveIntegerField(default=0, help_text="Transient failures in a row at the current stage")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_token = models.UUIDField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    correlation_id = models.UUIDField(default=uuid.uuid4)
    source_connection = models.ForeignKey(Connection, on_delete=models.PROTECT, related_name="records")
    source_key = models.CharField(max_length=200, help_text="The source object, e.g. deal:123 — one record per object")
    title = models.CharField(max_length=300, blank=True)
    amount = models.DecimalField(max_digits=18, decimal_places=2, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    original_payload = models.JSONField(default=dict, blank=True)
    current_payload = models.JSONField(default=dict, blank=True)
    context = models.JSONField(default=dict, blank=True, help_text="What earlier stages produced (ids, links)")
    version = models.PositiveIntegerField(default=1, help_text="Bumped by every human change (optimistic locking)")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    held_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # the exception desk
    assignee = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="assigned_records")
    priority_reason = models.CharField(max_length=200, blank=True,
                                       help_text='Why this priority, e.g. "P1: invoice of 48,200.00 EUR blocked"')
    priority_overridden = models.BooleanField(default=False)
    target_system = models.CharField(max_length=32, blank=True, help_text="The system the failed stage calls")
    error_signature = models.CharField(max_length=40, blank=True,
                                       help_text="reason + system + normalised message: groups alike exceptions")
    search_keys = ArrayField(models.CharField(max_length=200), default=list, blank=True,
                             help_text="Every id this record is known by (source, account, tax id, external ids…)")
    sla_due_at = models.DateTimeField(null=True, blank=True, help_text="When the current SLA clock runs out")
    sla_state = models.CharField(max_length=12, default="ok", help_text="ok / due_soon / breached")
    sla_notified_state = models.CharField(max_length=12, blank=True, help_text="Last SLA state notified")

    class Meta:
        ordering = ["priority", "created_at"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "source_connection", "source_key"], name="syncrecord_once"),
        ]
        permissions = [
            ("resubmit_syncrecord", "Can fix and resubmit a held record"),
            ("ignore_syncrecord", "Can resolve a held record without resubmitting"),
            ("view_raw_payload", "Can see and edit raw payloads"),
            ("view_personal_data", "Can see personal data (tax ids, contacts)"),
        ]
        indexes = [
            # workers claim due work in priority order (partial: only claimable rows are indexed)
            models.Index(fields=["priority", "next_attempt_at"], condition=Q(status__in=["pending", "retrying"]),
                         name="syncrecord_claim"),
            # the sweeper finds records whose worker died (lease expired)
            models.Index(fields=["lease_expires_at"], condition=Q(status="in_progress"), name="syncrecord_lease"),
            # the queue's filters: status/workflow/stage, reason, owner team, priority, age
            models.Index(fields=["status", "workflow", "stage"], name="syncrecord_status_wf"),
            models.Index(fields=["reason_code", "status"], name="syncrecord_reason"),
            models.Index(fields=["owner_team", "status", "priority"], name="syncrecord_team"),
            models.Index(fields=["status", "created_at"], name="syncrecord_age"),
            models.Index(fields=["correlation_id"], name="syncrecord_correlation"),
            # the desk: group by signature, my/unassigned, SLA state, sort by priority then SLA due time
            models.Index(fields=["error_signature", "status"], name="syncrecord_signature"),
            models.Index(fields=["assignee", "status"], name="syncrecord_assignee"),
            models.Index(fields=["status", "priority", "sla_due_at"], name="syncrecord_desk_order"),
            models.Index(fields=["sla_state", "status"], name="syncrecord_sla"),
            models.Index(fields=["status", "amount"], name="syncrecord_amount"),
            models.Index(fields=["target_system", "status"], name="syncrecord_target"),
            # the exception queue reads only held/dead rows: partial indexes in its sort order (LIMIT 50 stops
            # early instead of sorting the whole queue), per team and overall, and covering indexes so the facet
            # counts and the grouped view are index-only scans
            models.Index(F("priority"), F("sla_due_at").asc(nulls_last=True), F("held_at"), F("id"),
                         condition=Q(status__in=["held", "dead"]), name="desk_order"),
            models.Index(F("owner_team"), F("priority"), F("sla_due_at").asc(nulls_last=True), F("held_at"),
                         F("id"), condition=Q(status__in=["held", "dead"]), name="desk_team_order"),
            models.Index(fields=["owner_team", "reason_code", "workflow", "priority", "sla_state"],
                         include=["amount", "held_at", "sla_due_at", "id"],
                         condition=Q(status__in=["held", "dead"]), name="desk_facets"),
            models.Index(fields=["title", "id"], condition=Q(status__in=["held", "dead"]), name="desk_title"),
            # the grouped view: its groups and its facet counts aggregated in one index-only pass, in key order
            # (apps/console/queue.py facets_and_groups)
            models.Index(fields=["error_signature", "reason_code", "failed_system", "workflow", "stage", "owner_team",
                                 "priority", "sla_state"],
                         include=["held_at", "amount", "currency", "id"],
                         condition=Q(status__in=["held", "dead"]), name="desk_signature_groups"),
            # "find any record by any id": exact match on any key
            GinIndex(fields=["search_keys"], name="syncrecord_search_keys"),
            # …and by (part of) its title / customer name
            GinIndex(OpClass(Upper("title"), name="gin_trgm_ops"), name="syncrecord_title_trgm"),
            # the queue's search reads only held/dead rows: a trigram index of just those, so a title search stays
            # the size of the queue instead of growing with the whole table (syncrecord_title_trgm: 40 ms at 10M)
            GinIndex(OpClass(Upper("title"), name="gin_trgm_ops"), condition=Q(status__in=["held", "dead"]),
                     name="desk_title_trgm"),
        ]

    def __str__(self):
        return f"{self.workflow} {self.source_key} ({self.status})"


class Attempt(models.Model):
    """One call made to an external system for a record. The engine keeps a run's calls in memory and writes them
    in one INSERT … SELECT unnest(…) with the record's outcome (apps/sync/attempts.py), so a call made by a worker
    that died before that commit is not on record; the record's next run makes it again, and that one is."""

    class Outcome(models.TextChoices):
        STARTED = "started", "Started"  # no outcome was recorded: the client failed (a bug) before it finished
        OK = "ok", "OK"
        TRANSIENT = "transient", "Transient failure"
        PERMANENT = "permanent", "Permanent failure"

    record = models.ForeignKey(SyncRecord, on_delete=models.CASCADE, related_name="attempt_set")
    run = models.ForeignKey(SyncRun, null=True, blank=True, on_delete=models.SET_NULL)
    stage = models.CharField(max_length=40)
    system = models.CharField(max_length=32)
    method = models.CharField(max_length=8)
    url = models.CharField(max_length=500)
    request_summary = models.TextField(blank=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_excerpt = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.STARTED)
    # set when the call starts (the engine writes a stage's attempts in one INSERT when the stage commits)
    started_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["started_at", "id"]
        indexes = [
            models.Index(fields=["record", "started_at"], name="attempt_record"),
            # connection health and /metrics read the last hour per system; rows arrive in time order (BRIN)
            models.Index(fields=["system", "outcome", "started_at"], name="attempt_system"),
            BrinIndex(fields=["started_at"], name="attempt_started_brin"),
        ]


class BulkAction(models.Model):
    """A bulk action over many records (resubmit / assign / ignore / apply one fix to all): previewed, then run
    in RQ with its progress kept here."""

    class Status(models.TextChoices):
        PREVIEWED = "previewed", "Previewed"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    created_at = models.DateTimeField(auto_now_add=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    action = models.CharField(max_length=20, help_text="resubmit / assign / ignore / fix")
    filter_query = models.TextField(blank=True, help_text="The queue filter it was started from (URL query)")
    record_ids = ArrayField(models.BigIntegerField(), default=list)
    params = models.JSONField(default=dict, blank=True, help_text="Fix values, assignee, reason…")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PREVIEWED)
    preview = models.JSONField(default=dict, blank=True, help_text="Counts: would pass / still fail, and why")
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    log = models.JSONField(default=list, blank=True)
    rq_job_id = models.CharField(max_length=100, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]


class SyncRecordArchive(models.Model):
    """Terminal records moved out of the hot table after the retention period (see retention.py): the hot
    table stays the size of the recent work, whatever the history."""

    id = models.BigIntegerField(primary_key=True)
    workflow = models.CharField(max_length=40)
    status = models.CharField(max_length=16)
    source_connection_id = models.BigIntegerField()
    source_key = models.CharField(max_length=200)
    correlation_id = models.UUIDField(db_index=True)
    title = models.CharField(max_length=300, blank=True)
    amount = models.DecimalField(max_digits=18, decimal_places=2, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    created_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)
    search_keys = ArrayField(models.CharField(max_length=200), default=list, blank=True)
    data = models.JSONField(default=dict, help_text="Payloads and context as they were")
    archived_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [GinIndex(fields=["search_keys"], name="syncarchive_search_keys")]


class AuditEntry(models.Model):
    """An append-only trail of every human action on a record: who, what, before/after, why."""

    at = models.DateTimeField(auto_now_add=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT)
    record = models.ForeignKey(SyncRecord, null=True, blank=True, on_delete=models.PROTECT, related_name="audit")
    action = models.CharField(max_length=40)
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["at", "id"]
        verbose_name_plural = "audit entries"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("The audit trail is append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("The audit trail is append-only")
