"""The board's "Refresh the forecast now" button: POST only, CSRF-protected, permission-checked, audited."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from . import services


@require_POST
def refresh_now(request):
    if not services.can_refresh(request.user):
        raise PermissionDenied("Only finance ops and integration admins may start a forecast refresh.")
    reason = request.POST.get("reason", "").strip()[:300] or "refresh requested from the board"
    try:
        refresh = services.request_refresh(trigger="on_demand", actor=request.user, reason=reason)
    except services.NoForecastConnection as exc:
        messages.error(request, str(exc))
    except services.RefreshOpen as exc:
        if exc.record_status in ("held", "dead"):
            messages.warning(request, f"Forecast refresh #{exc.refresh.pk} failed and waits on the desk as record "
                                      f"#{exc.refresh.sync_record_id}: resubmit or resolve it there first.")
        else:
            messages.info(request, f"Forecast refresh #{exc.refresh.pk} is already under way.")
    else:
        messages.success(request, f"Forecast refresh #{refresh.pk} is queued: the board shows its progress.")
    return redirect("console:boards")
