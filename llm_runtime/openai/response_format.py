"""OpenAI's `response_format` (chat) and the Responses API's `text.format` as a `Constraint`: one reading for every
door that asks for a JSON reply."""
from __future__ import annotations

from llm_runtime.errors import ParameterError
from llm_runtime.structured.constraint import Constraint
from llm_runtime.tools.strict_schema import strict_schema

TYPES = ("text", "json_object", "json_schema")


def format_constraint(value, param: str = "response_format") -> Constraint | None:
    """`{"type": "text"}` (or None) -> None; `{"type": "json_object"}` -> any JSON object; `{"type": "json_schema",
    "json_schema": {"name", "schema", "strict"}}` (chat) or `{"type": "json_schema", "name", "schema", "strict"}`
    (the Responses API's `text.format`) -> that schema, enforced whether `strict` is true or not (a schema left out:
    any JSON object). Raises ParameterError naming `param`; a schema that cannot be enforced fails later, at submit,
    with llguidance's reason."""
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") not in TYPES:
        kind = value.get("type") if isinstance(value, dict) else type(value).__name__
        raise ParameterError(param, f"{param}.type must be one of {', '.join(TYPES)}, got {kind!r}", "invalid_value")
    if value["type"] == "text":
        return None
    if value["type"] == "json_object":
        return Constraint.json_object(param)
    spec, where = (value["json_schema"], f"{param}.json_schema") if "json_schema" in value else (value, param)
    if not isinstance(spec, dict):
        raise ParameterError(param, f"{where} must be an object with a name and a schema")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise ParameterError(param, f"Missing required parameter: '{where}.name'", "missing_required_parameter")
    if not isinstance(spec.get("strict", False), (bool, type(None))):
        raise ParameterError(param, f"{where}.strict must be true or false")
    schema = spec.get("schema")
    if schema is None:
        return Constraint.json_object(param)
    if not isinstance(schema, dict):
        raise ParameterError(param, f"{where}.schema must be a JSON schema object, got {type(schema).__name__}")
    return Constraint.json_schema(strict_schema(schema) if spec.get("strict") else schema, param)

