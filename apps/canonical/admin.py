from django.contrib import admin

from .models import Customer, Engagement, EngagementChange, ExternalId, LegalEntity, Milestone, PaymentTerms, RateCard, RateCardLine

admin.site.register(LegalEntity, list_display=["code", "name", "country", "base_currency", "active"])
admin.site.register(PaymentTerms, list_display=["code", "name", "days", "erp_terms_id"])
admin.site.register(Customer, list_display=["name", "tax_id", "country", "currency", "legal_entity"],
                    search_fields=["name", "tax_id"], raw_id_fields=["parent"])
admin.site.register(Engagement, list_display=["code", "name", "customer", "contract_type", "contract_value", "currency"],
                    search_fields=["code", "name"], raw_id_fields=["customer"])
admin.site.register(Milestone, list_display=["name", "engagement", "amount", "currency", "status"], raw_id_fields=["engagement"])
admin.site.register(ExternalId, list_display=["system", "object_type", "external_id", "content_type", "object_id"],
                    search_fields=["external_id"])


class RateCardLineInline(admin.TabularInline):
    model = RateCardLine
    extra = 1


@admin.register(RateCard)
class RateCardAdmin(admin.ModelAdmin):
    list_display = ["name", "currency"]
    inlines = [RateCardLineInline]
admin.site.register(EngagementChange, list_display=["engagement", "change_id", "source_system", "status", "applied_at"],
                    raw_id_fields=["engagement"])
