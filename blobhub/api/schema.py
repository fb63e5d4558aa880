"""OpenAPI helpers: describe the envelope around each resource (API.md §1)."""

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, inline_serializer
from rest_framework import serializers


class ErrorOut(serializers.Serializer):
    status = serializers.CharField(default="error")
    error = serializers.CharField()
    message = serializers.CharField()
    details = serializers.ListField(child=serializers.DictField())


_envelopes: dict[str, serializers.Serializer] = {}


def envelope(name: str, key: str | None = None, item: serializers.Serializer | None = None, many: bool = False):
    """A success envelope carrying `item` under `key` (a list with `cursor` if `many`)."""
    if name in _envelopes:
        return _envelopes[name]
    fields = {"status": serializers.CharField(default="success")}
    if key and item is not None:
        fields[key] = item(many=True) if many else item()
    if many:
        fields["cursor"] = serializers.CharField(required=False)
    _envelopes[name] = inline_serializer(name=name, fields=fields)
    return _envelopes[name]


ERRORS = {code: OpenApiResponse(ErrorOut) for code in (400, 401, 403, 409, 412, 413, 429)}

PAGE_PARAMETERS = [
    OpenApiParameter("limit", int, description="1..200, default 50"),
    OpenApiParameter("cursor", str, description="From the previous page's answer"),
]

IDEMPOTENCY_PARAMETER = OpenApiParameter(
    "Idempotency-Key", str, location=OpenApiParameter.HEADER, description="Replays the first outcome for 24 h"
)
IF_MATCH_PARAMETER = OpenApiParameter(
    "If-Match", str, location=OpenApiParameter.HEADER, description="The etag the write is based on"
)
