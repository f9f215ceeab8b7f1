from django.contrib import admin

from .models import Attempt, AuditEntry, Connection, InboundEvent, SyncRecord, SyncRun


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "kind", "role", "base_url", "enabled"]
    list_filter = ["kind", "role", "enabled"]
    exclude = ["credentials"]  # secrets are set from the environment / a shell, never shown


@admin.register(InboundEvent)
class InboundEventAdmin(admin.ModelAdmin):
    list_display = ["received_at", "connection_slug", "event_id", "event_type", "status", "http_status", "deliveries"]
    list_filter = ["status", "connection_slug", "verified"]
    search_fields = ["event_id", "source_key"]
    raw_id_fields = ["record"]


@admin.register(SyncRun)
class SyncRunAdmin(admin.ModelAdmin):
    list_display = ["pk", "kind", "status", "started_at", "completed_at"]
    list_filter = ["kind", "status"]


class AttemptInline(admin.TabularInline):
    model = Attempt
    extra = 0
    can_delete = False
    readonly_fields = ["stage", "system", "method", "url", "response_status", "duration_ms", "outcome", "started_at"]
    fields = readonly_fields


@admin.register(SyncRecord)
class SyncRecordAdmin(admin.ModelAdmin):
    list_display = ["pk", "workflow", "stage", "status", "reason_code", "owner_team", "priority", "title", "created_at"]
    list_filter = ["workflow", "status", "reason_code", "owner_team", "priority"]
    search_fields = ["source_key", "title", "correlation_id"]
    inlines = [AttemptInline]


@admin.register(Attempt)
class AttemptAdmin(admin.ModelAdmin):
    list_display = ["started_at", "record", "stage", "system", "method", "response_status", "outcome", "duration_ms"]
    list_filter = ["system", "outcome"]
    raw_id_fields = ["record", "run"]


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """Read-only: the audit trail is append-only."""

    list_display = ["at", "actor", "record", "action", "reason"]
    list_filter = ["action"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
