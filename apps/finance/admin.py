from django.contrib import admin

from . import models


@admin.register(models.FinancePolicy)
class FinancePolicyAdmin(admin.ModelAdmin):
    list_display = ["__str__", "reconciliation_tolerance", "default_expense_markup_pct", "forecast_stale_after_hours",
                    "updated_at"]


@admin.register(models.ExchangeRate)
class ExchangeRateAdmin(admin.ModelAdmin):
    list_display = ["from_currency", "to_currency", "rate", "rate_date"]
    list_filter = ["from_currency", "to_currency"]


@admin.register(models.DimensionMapping)
class DimensionMappingAdmin(admin.ModelAdmin):
    list_display = ["legal_entity", "service_code", "department_id", "class_id", "location_id", "active"]
    list_filter = ["legal_entity", "active"]


@admin.register(models.TimeEntry)
class TimeEntryAdmin(admin.ModelAdmin):
    list_display = ["source_id", "engagement", "person", "role", "work_date", "hours", "amount", "currency", "status"]
    list_filter = ["status", "currency"]
    search_fields = ["source_id", "person"]
    raw_id_fields = ["engagement"]


@admin.register(models.ExpenseEntry)
class ExpenseEntryAdmin(admin.ModelAdmin):
    list_display = ["source_id", "engagement", "category", "incurred_on", "spent_amount", "spent_currency", "amount",
                    "currency", "status"]
    list_filter = ["status"]
    raw_id_fields = ["engagement"]


class InvoiceLineInline(admin.TabularInline):
    model = models.InvoiceLine
    raw_id_fields = ["time_entry", "expense"]
    extra = 0


@admin.register(models.Invoice)
class InvoiceAdmin(admin.ModelAdmin):
    list_display = ["__str__", "engagement", "kind", "source_system", "status", "total", "amount_due", "currency",
                    "issued_on", "due_on"]
    list_filter = ["status", "source_system", "kind"]
    search_fields = ["number", "external_id"]
    raw_id_fields = ["engagement", "customer", "milestone"]
    inlines = [InvoiceLineInline]


@admin.register(models.Payment)
class PaymentAdmin(admin.ModelAdmin):
    list_display = ["external_id", "invoice", "status", "amount", "currency", "received_at"]
    raw_id_fields = ["invoice"]


@admin.register(models.RevenueEntry)
class RevenueEntryAdmin(admin.ModelAdmin):
    list_display = ["engagement", "period", "amount", "currency", "source_system"]
    raw_id_fields = ["engagement"]
