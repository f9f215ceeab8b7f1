"""The sandboxes' fault-injection form on the console's connections page: the sandbox contributes it (this view,
templates/sandbox/connection_faults.html and its template tag, listed in settings.HANDOFF_CONNECTION_PANELS), so
the console itself knows nothing of the sandboxes. POST-only, permission-checked and written to the audit trail
like the console's own connection actions."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.db import transaction
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from apps.console.boards import connections_context
from apps.sync.models import AuditEntry, Connection

from .credentials import DEFAULT_TOKENS
from .models import SandboxSystem

FAULT_FIELDS = ["error_rate", "rate_limit_rate", "timeout_rate", "lost_response_rate", "hang_ms", "latency_ms",
                "fail_next_count", "fail_next_status", "retry_after_seconds"]


class FaultForm(forms.ModelForm):
    error_rate = forms.FloatField(min_value=0, max_value=1, help_text="Share of calls answered 500 (0–1)")
    rate_limit_rate = forms.FloatField(min_value=0, max_value=1, help_text="Share answered 429 (0–1)")
    timeout_rate = forms.FloatField(min_value=0, max_value=1, help_text="Share that hang past the client timeout")
    lost_response_rate = forms.FloatField(min_value=0, max_value=1,
                                          help_text="Share written, then answered too late (a lost response)")
    hang_ms = forms.IntegerField(min_value=0, max_value=120_000, help_text="How long a timeout/lost response hangs")
    latency_ms = forms.IntegerField(min_value=0, max_value=60_000)
    fail_next_count = forms.IntegerField(min_value=0, max_value=10_000)
    fail_next_status = forms.IntegerField(min_value=400, max_value=599)
    retry_after_seconds = forms.IntegerField(min_value=0, max_value=3600)

    class Meta:
        model = SandboxSystem
        fields = FAULT_FIELDS


def fault_form(connection: Connection, bound: FaultForm | None = None) -> FaultForm | None:
    """The form for this connection's sandbox (a posted one with its errors, if given: a template passes "" when
    there is none); None when the sandboxes are off, so the page shows nothing of them."""
    if not settings.HANDOFF_SANDBOX_ENABLED:
        return None
    if bound:
        return bound
    instance = SandboxSystem.objects.filter(system=connection.kind).first() or SandboxSystem(system=connection.kind)
    return FaultForm(instance=instance, prefix=f"c{connection.pk}")


@require_POST
@permission_required("sync.change_connection", raise_exception=True)
def connection_faults(request, pk: int):
    if not settings.HANDOFF_SANDBOX_ENABLED:
        raise Http404("The sandboxes are not enabled here.")
    connection = get_object_or_404(Connection, pk=pk)
    SandboxSystem.objects.get_or_create(system=connection.kind,
                                        defaults={"token": DEFAULT_TOKENS.get(connection.kind, "x")})
    with transaction.atomic():
        system = SandboxSystem.objects.select_for_update().get(system=connection.kind)
        before = {f: getattr(system, f) for f in FAULT_FIELDS}
        form = FaultForm(request.POST, instance=system, prefix=f"c{pk}")
        if form.is_valid():
            form.save()
            after = {f: getattr(system, f) for f in FAULT_FIELDS}
            AuditEntry.objects.create(actor=request.user, record=None, action="fault_injection",
                                      before={"connection": connection.slug, "system": system.system, **before},
                                      after={"connection": connection.slug, "system": system.system, **after})
    if not form.is_valid():
        context = connections_context(request, bound={pk: {"faults": form}})
        return render(request, "console/boards/connections.html", context, status=400)
    messages.success(request, f"Fault injection for the {connection.kind} sandbox saved.")
    return redirect("console:connections")
