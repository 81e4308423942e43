"""A JSON schema as OpenAI's strict mode reads it (`response_format` with `strict: true`, a function tool with
`strict: true`)."""
from __future__ import annotations


def strict_schema(schema: dict) -> dict:
    """A copy of `schema` as OpenAI's strict mode reads it: an object schema that does not say otherwise takes no
    properties beyond its own (`additionalProperties: false`), at every depth."""
    out = dict(schema)
    if (out.get("type") == "object" or "properties" in out) and "additionalProperties" not in out:
        out["additionalProperties"] = False
    for key, value in out.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {k: strict_schema(v) if isinstance(v, dict) else v for k, v in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [strict_schema(v) if isinstance(v, dict) else v for v in value]
        elif key in _SCHEMA_ONE and isinstance(value, dict):
            out[key] = strict_schema(value)
    return out


_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")  # name -> schema
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONE = ("items", "additionalProperties", "not", "if", "then", "else", "contains")
