"""The schema a tool call's arguments are generated under: the tool's declared schema, closed and bounded.

A free schema lets a small model invent keys, or write one string, array or call for as long as it is let: the
declared schema in OpenAI's strict reading (no properties it does not declare, unless it says otherwise), with
every string and array that states no bound of its own bounded. A schema's own `maxLength` / `maxItems` win.
"""
from __future__ import annotations

from .strict_schema import map_schema, strict_schema

MAX_STRING_CHARS = 256  # a string argument without its own maxLength (nor enum, const, pattern or format)
MAX_ARRAY_ITEMS = 16  # an array argument without its own maxItems


def bounded_schema(schema: dict) -> dict:
    """`schema` closed (strict_schema) and with the default bounds on strings and arrays that state none."""
    return map_schema(strict_schema(schema), _bounded)


def _bounded(schema: dict) -> dict:
    types = schema.get("type")
    types = set(types) if isinstance(types, list) else {types}
    if "string" in types and not any(k in schema for k in ("maxLength", "enum", "const", "pattern", "format")):
        schema["maxLength"] = MAX_STRING_CHARS
    if "array" in types and "maxItems" not in schema:
        schema["maxItems"] = MAX_ARRAY_ITEMS
    return schema

