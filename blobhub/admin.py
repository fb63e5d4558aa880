from django.contrib import admin

from blobhub.models import IdempotencyRecord


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(admin.ModelAdmin):
    list_display = ["created_at", "caller", "key", "state", "response_status"]
    search_fields = ["caller", "key"]
    readonly_fields = ["caller", "key", "fingerprint", "state", "response_status", "response_body", "created_at"]
