from rest_framework import serializers

from blobhub.api.serializers import (
    AliasField,
    StrictChoiceField,
    StrictCharField,
    StrictDateTimeField,
    StrictSerializer,
    StrictUUIDField,
)
from orgs.models import ApiKey, Credential, Membership, Organization, Role, User

# --- Output -------------------------------------------------------------------------


class UserOut(serializers.ModelSerializer):
    alias = serializers.CharField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)

    class Meta:
        model = User
        fields = ["id", "alias", "email", "created_at"]


class OrganizationOut(serializers.ModelSerializer):
    class Meta:
        model = Organization
        fields = ["id", "alias", "name", "created_at", "updated_at", "etag"]


class MemberOut(serializers.ModelSerializer):
    user_alias = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = Membership
        fields = ["user_id", "user_alias", "role", "created_at", "updated_at", "etag"]


class ApiKeyOut(serializers.ModelSerializer):
    class Meta:
        model = ApiKey
        fields = ["id", "role", "description", "created_at", "expires_at", "last_used_at"]


class ApiKeyCreatedOut(ApiKeyOut):
    key = serializers.CharField(read_only=True, help_text="The secret; shown in this answer only.")

    class Meta(ApiKeyOut.Meta):
        fields = ApiKeyOut.Meta.fields + ["key"]


class CredentialOut(serializers.ModelSerializer):
    class Meta:
        model = Credential
        fields = ["id", "alias", "provider", "description", "created_at", "updated_at", "etag"]


class TokenPairOut(serializers.Serializer):
    access_token = serializers.CharField()
    refresh_token = serializers.CharField()
    expires_at = serializers.IntegerField(help_text="Expiry of the access token, epoch milliseconds.")


# --- Input --------------------------------------------------------------------------


class LoginIn(StrictSerializer):
    username = StrictCharField(max_length=150)
    password = StrictCharField(max_length=256, trim_whitespace=False)


class RefreshIn(StrictSerializer):
    refresh_token = StrictCharField(max_length=2048)


class OrganizationCreateIn(StrictSerializer):
    alias = AliasField()
    name = StrictCharField(max_length=128)


class OrganizationUpdateIn(StrictSerializer):
    alias = AliasField(required=False)
    name = StrictCharField(max_length=128, required=False)


class MemberCreateIn(StrictSerializer):
    user_id = StrictUUIDField()
    role = StrictChoiceField(choices=Role.choices)


class MemberUpdateIn(StrictSerializer):
    role = StrictChoiceField(choices=Role.choices)


class ApiKeyCreateIn(StrictSerializer):
    role = StrictChoiceField(choices=ApiKey.KeyRole.choices)
    description = StrictCharField(max_length=256, required=False, allow_blank=True)
    expires_at = StrictDateTimeField(required=False)


class CredentialCreateIn(StrictSerializer):
    alias = AliasField()
    provider = StrictCharField(max_length=64)
    description = StrictCharField(max_length=256, required=False, allow_blank=True)
    value = StrictCharField(max_length=16384, trim_whitespace=False, write_only=True)


class CredentialReplaceIn(StrictSerializer):
    provider = StrictCharField(max_length=64)
    description = StrictCharField(max_length=256, required=False, allow_blank=True)
    value = StrictCharField(max_length=16384, trim_whitespace=False, write_only=True)
