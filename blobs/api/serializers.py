import re

from rest_framework import serializers

from blobhub.api.serializers import (
    AliasField,
    PageQuerySerializer,
    StrictChoiceField,
    StrictCharField,
    StrictDateTimeField,
    StrictSerializer,
    StrictUUIDField,
)
from blobs.models import Blob, BlobMember, BlobMetadata, BlobType, Operation, Revision, RevisionMetadata
from orgs.models import ApiKey, Role

METADATA_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,128}\Z")

# --- Output -----------------------------------------------------------------------------


class BlobOut(serializers.ModelSerializer):
    org_id = serializers.UUIDField(read_only=True)
    default_revision_id = serializers.UUIDField(read_only=True, allow_null=True)

    class Meta:
        model = Blob
        fields = [
            "id", "alias", "org_id", "type", "visibility", "status", "default_revision_id",
            "description", "created_at", "updated_at", "etag",
        ]


class RevisionOut(serializers.ModelSerializer):
    blob_id = serializers.UUIDField(read_only=True)
    parent_id = serializers.UUIDField(read_only=True, allow_null=True)
    failed_operation = serializers.UUIDField(source="failed_operation_id", read_only=True, allow_null=True)
    failure = serializers.SerializerMethodField()
    tree_hash = serializers.SerializerMethodField()

    class Meta:
        model = Revision
        fields = [
            "id", "blob_id", "number", "phase", "status", "comment", "parent_id", "created_at",
            "updated_at", "failed_operation", "failure", "tree_hash",
        ]

    def get_failure(self, revision: Revision) -> str | None:
        return revision.failure or None

    def get_tree_hash(self, revision: Revision) -> str | None:
        return revision.tree_hash or None


class OperationOut(serializers.ModelSerializer):
    revision_id = serializers.UUIDField(read_only=True, allow_null=True)
    blob_id = serializers.UUIDField(read_only=True)

    class Meta:
        model = Operation
        fields = [
            "id", "type", "status", "revision_id", "blob_id", "progress", "result", "error",
            "created_at", "updated_at", "parts",
        ]

    def to_representation(self, operation: Operation) -> dict:
        data = super().to_representation(operation)
        if data["parts"] is None:
            data.pop("parts")
        return data


class BlobMetadataOut(serializers.ModelSerializer):
    class Meta:
        model = BlobMetadata
        fields = ["key", "value", "created_at", "updated_at", "etag"]


class RevisionMetadataOut(serializers.ModelSerializer):
    class Meta:
        model = RevisionMetadata
        fields = ["key", "value", "created_at", "updated_at", "etag"]


class BlobMemberOut(serializers.ModelSerializer):
    user_alias = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = BlobMember
        fields = ["user_id", "user_alias", "role", "created_at", "updated_at", "etag"]


class BlobApiKeyOut(serializers.ModelSerializer):
    blob_id = serializers.UUIDField(read_only=True)

    class Meta:
        model = ApiKey
        fields = ["id", "blob_id", "role", "description", "created_at", "expires_at", "last_used_at"]


class BlobApiKeyCreatedOut(BlobApiKeyOut):
    key = serializers.CharField(read_only=True)

    class Meta(BlobApiKeyOut.Meta):
        fields = BlobApiKeyOut.Meta.fields + ["key"]


# --- Input ------------------------------------------------------------------------------


class BlobListQuery(PageQuerySerializer):
    type = StrictChoiceField(choices=BlobType.choices, required=False)


class BlobCreateIn(StrictSerializer):
    alias = AliasField()
    type = StrictChoiceField(choices=BlobType.choices)
    visibility = StrictChoiceField(choices=Blob.Visibility.choices, required=False, default=Blob.Visibility.PRIVATE)
    description = StrictCharField(max_length=1024, required=False, allow_blank=True, default="")


class BlobUpdateIn(StrictSerializer):
    alias = AliasField(required=False)
    visibility = StrictChoiceField(choices=Blob.Visibility.choices, required=False)
    description = StrictCharField(max_length=1024, required=False, allow_blank=True)
    default_revision_id = StrictUUIDField(required=False)


class CommentIn(StrictSerializer):
    comment = StrictCharField(min_length=1, max_length=200, trim_whitespace=False)


class OptionalCommentIn(StrictSerializer):
    comment = StrictCharField(min_length=1, max_length=200, required=False, trim_whitespace=False)


class MetadataKeyField(StrictCharField):
    default_error_messages = {"bad_key": "Keys match ^[A-Za-z0-9_.:-]{{1,128}}$."}

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not METADATA_KEY.match(value):
            self.fail("bad_key")
        return value


class AnyJsonField(serializers.JSONField):
    """Any JSON value except an explicit null (API.md §1 refuses nulls)."""


class MetadataCreateIn(StrictSerializer):
    key = MetadataKeyField()
    value = AnyJsonField()


class MetadataPutIn(StrictSerializer):
    value = AnyJsonField()


class BlobMemberCreateIn(StrictSerializer):
    user_id = StrictUUIDField()
    role = StrictChoiceField(choices=Role.choices)


class BlobMemberUpdateIn(StrictSerializer):
    role = StrictChoiceField(choices=Role.choices)


class BlobApiKeyCreateIn(StrictSerializer):
    role = StrictChoiceField(choices=ApiKey.KeyRole.choices)
    description = StrictCharField(max_length=256, required=False, allow_blank=True)
    expires_at = StrictDateTimeField(required=False)


def metadata_key(key: str) -> str:
    if not METADATA_KEY.match(key):
        from blobhub.api.errors import InvalidRequest

        raise InvalidRequest("The metadata key is not valid.", [{"path": "key", "message": "Bad key."}])
    return key
