"""The Django admin for sync: connections are edited here (secrets write-only, audited); records, attempts,
inbound events, runs and the audit trail are read-only — a record changes only through the audited,
version-checked services (the console's fix / resubmit / ignore / assign)."""

import json
from urllib.parse import urlsplit

from django import forms
from django.contrib import admin

from .models import Attempt, AuditEntry, Connection, InboundEvent, SyncRecord, SyncRun


class ReadOnlyAdmin(admin.ModelAdmin):
    """Look, never touch: no add, no change, no delete (the change page shows every field as text)."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# ---------------------------------------------------------------- connections: secrets are write-only


def host(url: str) -> tuple[str, str]:
    parts = urlsplit(url or "")
    return parts.scheme.lower(), parts.netloc.lower()


class ConnectionForm(forms.ModelForm):
    """The secrets are never rendered: the page says whether one is set, and a field replaces it. A new host
    (scheme, host or port of the base URL) takes new credentials: the old ones are not sent to another server."""

    new_credentials = forms.CharField(
        required=False, widget=forms.PasswordInput(render_value=False),
        help_text='Replace the outbound credentials: a JSON object, e.g. {"access_token": "…"}. Empty: keep.')
    clear_credentials = forms.BooleanField(required=False, help_text="Remove the outbound credentials.")
    new_inbound_secret = forms.CharField(
        required=False, widget=forms.PasswordInput(render_value=False),
        help_text="Replace the secret that signs this system's callbacks. Empty: keep.")

    class Meta:
        model = Connection
        # the callback URL secret changes only through its audited rotation (Console → Connections)
        exclude = ["credentials", "inbound_secret", "callback_secret_hash", "callback_secret_previous_hash",
                   "callback_secret_previous_until"]

    def clean_new_credentials(self):
        raw = self.cleaned_data["new_credentials"].strip()
        if not raw:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            raise forms.ValidationError("Not valid JSON.") from None
        if not isinstance(value, dict) or not value:
            raise forms.ValidationError('A JSON object with at least one key, e.g. {"access_token": "…"}.')
        return value

    def clean(self):
        data = super().clean()
        old = self.instance
        moved = old.pk and "base_url" in data and host(data["base_url"]) != host(old.base_url)
        if moved and old.credentials and data.get("new_credentials") is None and not data.get("clear_credentials"):
            self.add_error("new_credentials", "The host changed: enter the credentials for the new host, or tick "
                                              "“clear credentials”. The old ones are not sent to another server.")
        return data


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    form = ConnectionForm
    list_display = ["slug", "name", "kind", "role", "base_url", "enabled"]
    list_filter = ["kind", "role", "enabled"]
    readonly_fields = ["credentials_state", "inbound_secret_state"]

    @admin.display(description="Credentials")
    def credentials_state(self, obj):
        return "set" if obj and obj.credentials else "not set"

    @admin.display(description="Inbound secret")
    def inbound_secret_state(self, obj):
        return "set" if obj and obj.inbound_secret else "not set"

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        before = {"credentials": self.credentials_state(obj), "inbound_secret": self.inbound_secret_state(obj)}
        if change:
            saved = Connection.objects.get(pk=obj.pk)
            before = {**{f: str(getattr(saved, f)) for f in form.changed_data if hasattr(saved, f)},
                      "credentials": self.credentials_state(saved),
                      "inbound_secret": self.inbound_secret_state(saved)}
            if host(obj.base_url) != host(saved.base_url):
                obj.credentials = {}  # never sent to a new host; replaced just below if new ones were given
        if data.get("clear_credentials"):
            obj.credentials = {}
        if data.get("new_credentials") is not None:
            obj.credentials = data["new_credentials"]
        if data.get("new_inbound_secret"):
            obj.inbound_secret = data["new_inbound_secret"].strip()
        super().save_model(request, obj, form, change)
        after = {**{f: str(getattr(obj, f)) for f in form.changed_data if hasattr(obj, f)},
                 "credentials": self.credentials_state(obj), "inbound_secret": self.inbound_secret_state(obj)}
        for secret in ("new_credentials", "new_inbound_secret"):  # a secret is recorded as replaced, never shown
            if secret in form.changed_data:
                after[secret.removeprefix("new_")] = "replaced"
        AuditEntry.objects.create(actor=request.user, record=None, action="connection_change" if change else
                                  "connection_add", before={"connection": obj.slug, **before},
                                  after={"connection": obj.slug, **after}, reason="edited in the Django admin")


# ---------------------------------------------------------------- read-only: what happened stays as it happened


@admin.register(InboundEvent)
class InboundEventAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "connection_slug", "event_id", "event_type", "status", "http_status", "deliveries"]
    list_filter = ["status", "connection_slug", "verified"]
    search_fields = ["event_id", "source_key"]
    raw_id_fields = ["record"]


@admin.register(SyncRun)
class SyncRunAdmin(ReadOnlyAdmin):
    list_display = ["pk", "kind", "status", "started_at", "completed_at"]
    list_filter = ["kind", "status"]


class AttemptInline(admin.TabularInline):
    model = Attempt
    extra = 0
    can_delete = False
    readonly_fields = ["stage", "system", "method", "url", "response_status", "duration_ms", "outcome", "started_at"]
    fields = readonly_fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(SyncRecord)
class SyncRecordAdmin(ReadOnlyAdmin):
    list_display = ["pk", "workflow", "stage", "status", "reason_code", "owner_team", "priority", "title", "created_at"]
    list_filter = ["workflow", "status", "reason_code", "owner_team", "priority"]
    search_fields = ["source_key", "title", "correlation_id"]
    inlines = [AttemptInline]


@admin.register(Attempt)
class AttemptAdmin(ReadOnlyAdmin):
    list_display = ["started_at", "record", "stage", "system", "method", "response_status", "outcome", "duration_ms"]
    list_filter = ["system", "outcome"]
    raw_id_fields = ["record", "run"]


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """The audit trail is append-only."""

    list_display = ["at", "actor", "record", "action", "reason"]
    list_filter = ["action"]
