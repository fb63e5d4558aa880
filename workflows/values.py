"""Typed values at ports (API.md §3.1) and the plain values components compute on."""

from typing import Any

from blobhub.api.parsers import unstorable
from blobs.store import NotJson, canonical_json

# The key that carries each type's payload in its typed form.
PAYLOAD_KEY = {
    "text": "text",
    "integer": "integer",
    "float": "float",
    "boolean": "flag",
    "choice": "id",
    "json": "json",
    "message": "message",
    "blob": "blob_id",
}
TYPES = frozenset(PAYLOAD_KEY) | {"any"}


class ValueError_(Exception):
    """A typed value that is malformed or of the wrong type."""


def conforms(value_type: str, plain: Any) -> bool:
    if value_type == "any":
        return True
    if value_type == "text":
        return isinstance(plain, str)
    if value_type == "integer":
        return isinstance(plain, int) and not isinstance(plain, bool)
    if value_type == "float":
        return isinstance(plain, (int, float)) and not isinstance(plain, bool)
    if value_type == "boolean":
        return isinstance(plain, bool)
    if value_type == "choice":
        return isinstance(plain, str)
    if value_type == "json":
        return True
    if value_type == "message":
        return isinstance(plain, dict) and isinstance(plain.get("role"), str) and isinstance(plain.get("content"), list)
    if value_type == "blob":
        return isinstance(plain, dict) and _is_sha256(plain.get("blob_id"))
    return False


def unwrap(typed: Any) -> tuple[str, Any]:
    """`{"type": "text", "text": "hi"}` → `("text", "hi")`; raises ValueError_ when malformed."""
    # A `type` that is a list or an object cannot be looked up: it is checked to be a string first.
    if not isinstance(typed, dict) or not isinstance(typed.get("type"), str) or typed["type"] not in PAYLOAD_KEY:
        raise ValueError_("A value is an object with a known `type`.")
    value_type = typed["type"]
    key = PAYLOAD_KEY[value_type]
    extra = set(typed) - {"type", key}
    if key not in typed or extra:
        raise ValueError_(f"A {value_type} value carries exactly the key `{key}`.")
    plain = typed[key]
    if value_type == "blob":
        plain = {"blob_id": plain}
    if not conforms(value_type, plain):
        raise ValueError_(f"The `{key}` of a {value_type} value has the wrong type.")
    return value_type, plain


def infer(plain: Any) -> str:
    if isinstance(plain, bool):
        return "boolean"
    if isinstance(plain, int):
        return "integer"
    if isinstance(plain, float):
        return "float"
    if isinstance(plain, str):
        return "text"
    if isinstance(plain, dict) and set(plain) == {"blob_id"} and _is_sha256(plain["blob_id"]):
        return "blob"
    return "json"


def wrap(value_type: str, plain: Any) -> dict:
    """The typed form of a plain value; `any` takes the type the value has."""
    if value_type in ("any", "choice") and not conforms(value_type, plain):
        value_type = infer(plain)
    if value_type == "any":
        value_type = infer(plain)
    if value_type == "blob":
        return {"type": "blob", "blob_id": plain["blob_id"]}
    if value_type == "float" and isinstance(plain, int):
        plain = float(plain)
    return {"type": value_type, PAYLOAD_KEY[value_type]: plain}


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def stored_size(typed: Any) -> int:
    """The size of a value as stored (its canonical JSON); NotJson when no record could hold
    it: NaN or an infinity, a lone surrogate, or a NUL (which PostgreSQL's jsonb refuses)."""
    if (problem := unstorable(typed)) is not None:
        raise NotJson(problem)
    return len(canonical_json(typed))
