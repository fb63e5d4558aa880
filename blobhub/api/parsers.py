"""The JSON parser of the REST API: DRF's, refusing strings nothing downstream can store."""

from collections.abc import Iterator
from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


def strings(value: Any) -> Iterator[str]:
    """Every string in parsed JSON, keys included; iterative, so that a deep value cannot
    exhaust the stack."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str):
            yield item


def is_text(value: str) -> bool:
    """False for a string holding a lone UTF-16 surrogate (a `\\ud800` escape parses to one),
    which no UTF-8 holds."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def unstorable(value: Any) -> str | None:
    """Why the parsed JSON `value` cannot be stored, or None: a lone surrogate is not text,
    and PostgreSQL's text and jsonb refuse NUL (`\\u0000`); either would fail a write
    half-way, as a 500."""
    for item in strings(value):
        if "\x00" in item:
            return "A string holds a NUL character (\\u0000), which cannot be stored."
        if not is_text(item):
            return "A string holds a lone UTF-16 surrogate (such as \\ud800), which is not text."
    return None


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        problem = unstorable(data)
        if problem is not None:
            raise ParseError(problem)
        return data
