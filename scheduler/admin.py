from django.contrib import admin

from scheduler.models import ActiveSchedule, Firing


@admin.register(ActiveSchedule)
class ActiveScheduleAdmin(admin.ModelAdmin):
    list_display = ["schedule_id", "blob", "state", "next_fire_at"]
    list_filter = ["state"]
    readonly_fields = [field.name for field in ActiveSchedule._meta.fields]


@admin.register(Firing)
class FiringAdmin(admin.ModelAdmin):
    list_display = ["schedule_id", "scheduled_for", "status", "created_at"]
    list_filter = ["status"]
    readonly_fields = [field.name for field in Firing._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False
