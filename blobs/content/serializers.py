"""Input shapes of the content surfaces.

Field names follow the systems these surfaces copy: camelCase for Stepflow
(`blobType`, `contentType`), snake_case for the Skills Protocol (`blob_id`, `max_bytes`).
"""

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from blobhub.api.serializers import StrictCharField, StrictChoiceField, StrictIntegerField, StrictSerializer

STEPFLOW_BLOB_TYPES = ("data", "flow", "binary")
SKILLS_KINDS = ("text", "json", "binary")
READ_MODES = ("sample_head", "sample_tail", "full")
DEFAULT_MAX_BYTES = 2000


@extend_schema_field(OpenApiTypes.ANY)
class AnyJsonField(serializers.Field):
    """Any JSON value, `null` included: the content itself, never coerced."""

    def to_internal_value(self, data):
        return data

    def to_representation(self, value):
        return value

    def validate_empty_values(self, data):
        if data is serializers.empty:
            return super().validate_empty_values(data)
        return False, data


class StoreBlobIn(StrictSerializer):
    """`POST /api/v1/blobs` with a JSON body."""

    data = AnyJsonField(help_text="The JSON value; for blobType binary, the bytes in standard base64.")
    blobType = StrictChoiceField(choices=STEPFLOW_BLOB_TYPES, required=False, default="data")
    # Stepflow sends `filename: null` for no name; that is accepted as absent.
    filename = StrictCharField(required=False, allow_null=True, allow_blank=True, trim_whitespace=False)
    contentType = StrictCharField(required=False, allow_null=True, max_length=127)


class StoreBlobOut(serializers.Serializer):
    blobId = serializers.CharField()
    filename = serializers.CharField(required=False)


class GetBlobOut(serializers.Serializer):
    data = serializers.JSONField()
    blobType = serializers.ChoiceField(choices=STEPFLOW_BLOB_TYPES)
    blobId = serializers.CharField()
    filename = serializers.CharField(required=False)
    contentType = serializers.CharField(required=False)


class StepflowErrorOut(serializers.Serializer):
    code = serializers.IntegerField(help_text="The HTTP status, as Stepflow's ErrorResponse carries it")
    message = serializers.CharField()
    status = serializers.CharField(default="error")
    error = serializers.CharField()
    details = serializers.ListField(child=serializers.DictField())


class CreateBlobParams(StrictSerializer):
    """Skills `create_blob`."""

    content = AnyJsonField()
    kind = StrictChoiceField(choices=SKILLS_KINDS)


class ReadBlobParams(StrictSerializer):
    """Skills `read_blob`."""

    blob_id = StrictCharField(max_length=80)
    mode = StrictChoiceField(choices=READ_MODES, required=False, default="sample_head")
    max_bytes = StrictIntegerField(required=False, default=DEFAULT_MAX_BYTES, min_value=1)

    def validate(self, attrs: dict) -> dict:
        # A sample is never larger than a full read may be (the default always fits).
        limit = settings.SKILLS_READ_FULL_MAX_BYTES
        if "max_bytes" in self.initial_data and attrs["max_bytes"] > limit:
            raise serializers.ValidationError({"max_bytes": [f"Must be at most {limit} (SKILLS_READ_FULL_MAX_BYTES)."]})
        return attrs
