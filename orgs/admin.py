"""Django admin for operators. Secrets never show: keys by lookup id, credentials without value."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

from blobs.admin import operator
from orgs.models import ApiKey, AuditEntry, Credential, Membership, Organization, User
from orgs.services import organization_remove


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ["username", "email", "is_staff", "is_active", "date_joined"]


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]
    readonly_fields = ["etag"]


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["alias", "name", "created_at"]
    search_fields = ["alias", "name"]
    readonly_fields = ["id", "etag", "created_at", "updated_at"]
    inlines = [MembershipInline]

    def delete_model(self, request: HttpRequest, obj: Organization) -> None:
        organization_remove(principal=operator(request), org=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        for org in queryset:
            organization_remove(principal=operator(request), org=org)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["org", "user", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["org__alias", "user__username"]
    autocomplete_fields = ["org", "user"]
    readonly_fields = ["etag"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are created through the API or `create_api_key`; here they can be read and revoked."""

    list_display = ["lookup", "org", "role", "description", "created_by", "expires_at", "last_used_at", "revoked_at"]
    list_filter = ["role"]
    search_fields = ["lookup", "org__alias", "description"]
    fields = ["org", "role", "description", "lookup", "created_by", "expires_at", "last_used_at", "revoked_at"]
    readonly_fields = ["org", "role", "lookup", "created_by", "last_used_at"]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(Credential)
class CredentialAdmin(admin.ModelAdmin):
    """The encrypted value is not a field here at all; set it through the API."""

    list_display = ["alias", "org", "provider", "updated_at"]
    search_fields = ["alias", "org__alias", "provider"]
    fields = ["org", "alias", "provider", "description", "created_at", "updated_at"]
    readonly_fields = ["org", "alias", "created_at", "updated_at"]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "org", "actor", "action", "target_type", "target_id", "client_ip"]
    list_filter = ["action"]
    search_fields = ["actor", "action", "target_id", "org__alias"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
