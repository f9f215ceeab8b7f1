from django.contrib import admin

from . import models


@admin.register(models.ForecastRefresh)
class ForecastRefreshAdmin(admin.ModelAdmin):
    list_display = ["id", "trigger", "status", "engagement", "created_at", "as_of", "finished_at", "rows",
                    "rows_imported", "task_id"]
    list_filter = ["status", "trigger"]
    raw_id_fields = ["engagement", "requested_by"]
    readonly_fields = ["result"]


@admin.register(models.ForecastPeriod)
class ForecastPeriodAdmin(admin.ModelAdmin):
    list_display = ["engagement", "period", "currency", "approved_hours", "billed", "recognised_revenue",
                    "billed_to_date", "backlog", "updated_at"]
    list_filter = ["currency", "period"]
    raw_id_fields = ["engagement", "refresh"]
