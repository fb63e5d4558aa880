"""Django admin for blobs: read-mostly views of what operators look at."""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from blobs.models import Blob, BlobMember, Event, ManifestEntry, Operation, Revision, StoredObject
from blobs.services.blobs import blob_remove
from orgs.authentication import client_ip
from orgs.principal import Principal


def operator(request: HttpRequest) -> Principal:
    """The audit log's actor for a change made in the admin."""
    return Principal(user=request.user, client_ip=client_ip(request))


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

    # A plain delete trips the database's guard on committed manifests.
    def delete_model(self, request: HttpRequest, obj: Blob) -> None:
        blob_remove(principal=operator(request), blob=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Blob]) -> None:
        for blob in queryset.select_related("org"):
            blob_remove(principal=operator(request), blob=blob)


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

    def save_model(self, request: HttpRequest, obj: BlobMember, form, change: bool) -> None:
        obj.org_id = obj.blob.org_id  # every tenant row carries its blob's org
        super().save_model(request, obj, form, change)


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
