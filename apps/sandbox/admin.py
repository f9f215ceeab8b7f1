from django.contrib import admin

from .models import SandboxObject, SandboxSystem

admin.site.register(SandboxSystem, list_display=["system", "error_rate", "rate_limit_rate", "latency_ms", "fail_next_count"])
admin.site.register(SandboxObject, list_display=["pk", "system", "object_type", "external_key", "writes", "updated_at"],
                    list_filter=["system", "object_type"], search_fields=["external_key"])
