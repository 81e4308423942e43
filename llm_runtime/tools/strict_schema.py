"""A JSON schema as OpenAI's strict mode reads it (`response_format` with `strict: true`, a function tool with
`strict: true`), and the walk over a schema's subschemas that such readings are made with."""
from __future__ import annotations

from collections.abc import Callable


def strict_schema(schema: dict) -> dict:
    """A copy of `schema` as OpenAI's strict mode reads it: an object schema that does not say otherwise takes no
    properties beyond its own (`additionalProperties: false`), at every depth."""
    return map_schema(schema, _closed)


def map_schema(schema: dict, change: Callable[[dict], dict]) -> dict:
    """A copy of `schema` with `change` applied to it and to every subschema it holds, at every depth."""
    out = change(dict(schema))
    for key, value in out.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {k: map_schema(v, change) if isinstance(v, dict) else v for k, v in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [map_schema(v, change) if isinstance(v, dict) else v for v in value]
        elif key in _SCHEMA_ONE and isinstance(value, dict):
            out[key] = map_schema(value, change)
    return out


def _closed(schema: dict) -> dict:
    if (schema.get("type") == "object" or "properties" in schema) and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    return schema


_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")  # name -> schema
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONE = ("items", "additionalProperties", "not", "if", "then", "else", "contains")
