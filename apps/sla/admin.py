from django import forms
from django.contrib import admin
from django.db.models import Count

from .models import WEEKDAYS, BusinessCalendar, EntityCalendar, Holiday, SlaPolicy


class BusinessCalendarForm(forms.ModelForm):
    working_weekdays = forms.TypedMultipleChoiceField(choices=WEEKDAYS, coerce=int,
                                                      widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = BusinessCalendar
        fields = ["name", "timezone", "work_start", "work_end", "working_weekdays", "is_default", "description"]


class HolidayInline(admin.TabularInline):
    model = Holiday
    extra = 1
    fields = ["date", "name"]


class EntityCalendarInline(admin.TabularInline):
    model = EntityCalendar
    extra = 0
    fields = ["legal_entity"]


@admin.register(BusinessCalendar)
class BusinessCalendarAdmin(admin.ModelAdmin):
    form = BusinessCalendarForm
    list_display = ["name", "hours", "weekdays", "is_default", "holiday_count", "entity_count"]
    list_filter = ["is_default", "timezone"]
    search_fields = ["name", "timezone"]
    inlines = [HolidayInline, EntityCalendarInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(n_holidays=Count("holidays", distinct=True),
                                                      n_entities=Count("entities", distinct=True))

    @admin.display(description="Working hours")
    def hours(self, obj):
        return obj.hours_display

    @admin.display(description="Working days")
    def weekdays(self, obj):
        return obj.weekdays_display

    @admin.display(description="Holidays", ordering="n_holidays")
    def holiday_count(self, obj):
        return obj.n_holidays

    @admin.display(description="Legal entities", ordering="n_entities")
    def entity_count(self, obj):
        return obj.n_entities


@admin.register(Holiday)
class HolidayAdmin(admin.ModelAdmin):
    list_display = ["date", "name", "calendar"]
    list_filter = ["calendar"]
    search_fields = ["name"]
    date_hierarchy = "date"
    list_select_related = ["calendar"]


@admin.register(EntityCalendar)
class EntityCalendarAdmin(admin.ModelAdmin):
    list_display = ["legal_entity", "calendar"]
    list_filter = ["calendar"]
    list_select_related = ["legal_entity", "calendar"]


@admin.register(SlaPolicy)
class SlaPolicyAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "workflow", "stage", "priority", "duration", "business_time", "due_soon_percent",
                    "active"]
    list_filter = ["kind", "workflow", "priority", "business_time", "active"]
    search_fields = ["name", "workflow", "stage", "description"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "active", "description"]}),
        ("Applies to", {"fields": ["workflow", "stage", "priority"],
                        "description": "Flow: from the record's creation until it is past the stage (blank stage: "
                                       "until it succeeds). Exception: from the hold until the record is resolved. "
                                       "Blank workflow / priority “Any” match every record; the most specific "
                                       "policy wins."}),
        ("Clock", {"fields": ["duration_minutes", "business_time", "due_soon_percent"]}),
    ]

    @admin.display(description="Duration", ordering="duration_minutes")
    def duration(self, obj):
        return obj.duration_display
