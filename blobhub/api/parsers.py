"""The JSON parser of the REST API: DRF's, refusing strings nothing downstream can store."""

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


def unstorable(value: Any) -> str | None:
    """Why the parsed JSON `value` cannot be stored, or None. JSON escapes can spell a lone
    UTF-16 surrogate (`\\ud800`), which no UTF-8 holds, and NUL (`\\u0000`), which
    PostgreSQL's text and jsonb refuse: either would fail a write half-way, as a 500."""
    pending = [value]
    while pending:  # iterative: a deep body must not exhaust the stack here either
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                return "A string holds a NUL character (\\u0000), which cannot be stored."
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "A string holds a lone UTF-16 surrogate (such as \\ud800), which is not text."
    return None


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        problem = unstorable(data)
        if problem is not None:
            raise ParseError(problem)
        return data
