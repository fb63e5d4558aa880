"""Keyset pagination with `limit` and an opaque `cursor` (API.md §1).

A cursor names the last row of the page just served by its sort key, so pages stay
stable while rows are added and each page costs one indexed range query.
"""

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Q, QuerySet

from blobhub.api.errors import InvalidRequest

DEFAULT_LIMIT = 50


@dataclass
class Page:
    items: list
    cursor: str | None

    def payload(self, key: str, render) -> dict:
        body = {key: [render(item) for item in self.items]}
        if self.cursor:
            body["cursor"] = self.cursor
        return body


def paginate(
    queryset: QuerySet,
    *,
    limit: int | None,
    cursor: str | None,
    field: str = "created_at",
    newest_first: bool = False,
) -> Page:
    limit = limit or DEFAULT_LIMIT
    direction = "-" if newest_first else ""
    queryset = queryset.order_by(f"{direction}{field}", f"{direction}id")
    if cursor:
        value, last_id = _decode(cursor)
        op = "lt" if newest_first else "gt"
        queryset = queryset.filter(Q(**{f"{field}__{op}": value}) | Q(**{field: value, f"id__{op}": last_id}))
    rows = list(queryset[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = _encode(getattr(rows[-1], field), rows[-1].id) if more else None
    return Page(rows, next_cursor)


def _encode(value: datetime, row_id) -> str:
    raw = json.dumps([value.isoformat(), str(row_id)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Take back only what `_encode` writes: a UTC timestamp and a row id. Any other offset
    could push the timestamp past what the database holds (a 500 rather than a 400)."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value, row_id = json.loads(base64.urlsafe_b64decode(padded))
        value = datetime.fromisoformat(value)
        if value.utcoffset() != timedelta(0):
            raise ValueError("not a UTC timestamp")
        return value, uuid.UUID(row_id)
    except (ValueError, TypeError, AttributeError):
        raise _bad_cursor() from None


def _bad_cursor() -> InvalidRequest:
    return InvalidRequest("The cursor is not one this server issued.", [{"path": "cursor", "message": "Invalid cursor."}])
