"""Strict input parsing: unknown fields, explicit nulls and wrong types are refused.

DRF coerces by default (`5` becomes `"5"`, `"yes"` becomes `True`); a client that sends
the wrong type has a bug we should tell it about, so these fields refuse instead.
"""

import re
import uuid
from typing import Any

from rest_framework import serializers

ALIAS_PATTERN = re.compile(r"^[a-z0-9_-]{6,42}$")


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return False
    return True


def is_alias(value: str) -> bool:
    return ALIAS_PATTERN.fullmatch(value) is not None and not is_uuid(value)


def ref_lookup(ref: str) -> dict:
    """Filter kwargs for a path part: a value that parses as a UUID is an id, else an alias.
    Anything else names no row: `pk__in=[]` matches nothing without a query, so stray bytes
    (a NUL, which PostgreSQL text cannot hold) never reach the database."""
    if is_uuid(ref):
        return {"id": ref}
    return {"alias": ref} if is_alias(ref) else {"pk__in": []}


class StrictCharField(serializers.CharField):
    default_error_messages = {"not_a_string": "Must be a string."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    default_error_messages = {"not_a_boolean": "Must be true or false."}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("not_a_boolean")
        return data


class StrictIntegerField(serializers.IntegerField):
    default_error_messages = {"not_an_integer": "Must be an integer."}

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("not_an_integer")
        return super().to_internal_value(data)


class StrictChoiceField(serializers.ChoiceField):
    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid_choice", input=data)
        return super().to_internal_value(data)


class StrictDateTimeField(serializers.DateTimeField):
    def to_internal_value(self, value: Any):
        if not isinstance(value, str):
            self.fail("invalid", format="ISO 8601")
        return super().to_internal_value(value)


class StrictUUIDField(serializers.UUIDField):
    def to_internal_value(self, data: Any):
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


class AliasField(StrictCharField):
    """`^[a-z0-9_-]{6,42}$` and never UUID-shaped, so a path part is unambiguous."""

    default_error_messages = {
        "bad_alias": "Must match ^[a-z0-9_-]{{6,42}}$.",
        "uuid_alias": "Must not look like a UUID: path parts that parse as UUIDs are ids.",
    }

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        if not ALIAS_PATTERN.match(value):
            self.fail("bad_alias")
        if is_uuid(value):
            self.fail("uuid_alias")
        return value


class StrictSerializer(serializers.Serializer):
    """A request body: a JSON object with only the declared keys."""

    default_error_messages = {"unknown_field": "Unknown field."}

    def to_internal_value(self, data: Any) -> dict:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class QuerySerializer(StrictSerializer):
    """Query parameters: an empty value or the text `null` is refused (API.md §1)."""

    def to_internal_value(self, data: Any) -> dict:
        values = {}
        for name in data:
            items = data.getlist(name) if hasattr(data, "getlist") else [data[name]]
            if len(items) != 1:
                raise serializers.ValidationError({name: ["Give this parameter once."]})
            if items[0] in ("", "null"):
                raise serializers.ValidationError({name: ["Must not be empty or null."]})
            values[name] = items[0]
        return super().to_internal_value(values)


class PageQuerySerializer(QuerySerializer):
    limit = serializers.IntegerField(min_value=1, max_value=200, required=False)
    cursor = serializers.CharField(max_length=512, required=False)


def parse(serializer_class: type[serializers.Serializer], data: Any, **kwargs: Any) -> dict:
    """Validate `data` with the serializer and return the clean values (or raise a 400)."""
    if not isinstance(data, dict) and not hasattr(data, "getlist"):
        raise serializers.ValidationError({"non_field_errors": ["The body must be a JSON object."]})
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
