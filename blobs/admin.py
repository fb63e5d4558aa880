"""Django admin for blobs: read-mostly views of what operators look at."""

from django.contrib import admin

from blobs.models import Blob, BlobMember, Event, ManifestEntry, Operation, Revision, StoredObject


class RevisionInline(admin.TabularInline):
    model = Revision
    extra = 0
    fields = ["number", "phase", "status", "comment", "created_at"]
    readonly_fields = fields
    show_change_link = True
    can_delete = False


@admin.register(Blob)
class BlobAdmin(admin.ModelAdmin):
    list_display = ["alias", "org", "type", "visibility", "status", "created_at"]
    list_filter = ["type", "visibility", "status"]
    search_fields = ["alias", "org__alias"]
    readonly_fields = ["id", "org", "type", "default_revision", "etag", "created_at", "updated_at", "created_by"]
    inlines = [RevisionInline]


class ManifestEntryInline(admin.TabularInline):
    model = ManifestEntry
    extra = 0
    fields = ["path", "object", "size"]
    readonly_fields = fields
    can_delete = False


@admin.register(Revision)
class RevisionAdmin(admin.ModelAdmin):
    list_display = ["blob", "number", "phase", "status", "comment", "created_at"]
    list_filter = ["phase", "status"]
    search_fields = ["blob__alias", "comment"]
    readonly_fields = [
        "id", "org", "blob", "number", "phase", "status", "parent", "tree_hash", "failed_operation", "failure",
        "etag", "created_at", "updated_at",
    ]
    inlines = [ManifestEntryInline]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(BlobMember)
class BlobMemberAdmin(admin.ModelAdmin):
    list_display = ["blob", "user", "role", "created_at"]
    list_filter = ["role"]
    autocomplete_fields = ["user"]
    raw_id_fields = ["blob"]
    readonly_fields = ["org", "etag"]


@admin.register(Operation)
class OperationAdmin(admin.ModelAdmin):
    list_display = ["id", "type", "status", "blob", "progress", "created_at"]
    list_filter = ["type", "status"]
    readonly_fields = [field.name for field in Operation._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(StoredObject)
class StoredObjectAdmin(admin.ModelAdmin):
    list_display = ["sha256", "size", "created_at"]
    search_fields = ["sha256"]
    fields = ["sha256", "size", "created_at"]
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["stream", "sequence", "type", "created_at"]
    list_filter = ["type"]
    search_fields = ["stream"]
    readonly_fields = [field.name for field in Event._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
