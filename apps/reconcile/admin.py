from django.contrib import admin

from .models import ReconciliationRun


@admin.register(ReconciliationRun)
class ReconciliationRunAdmin(admin.ModelAdmin):
    list_display = ["__str__", "trigger", "status", "started_at", "finished_at", "lines", "over_tolerance", "opened",
                    "resolved"]
    list_filter = ["status", "trigger"]
    readonly_fields = [f.name for f in ReconciliationRun._meta.fields]

    def has_add_permission(self, request):
        return False
