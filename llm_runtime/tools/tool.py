"""OpenAI function tools: the request's `tools` and `tool_choice`, validated, and the calls a reply makes."""
from __future__ import annotations

import json
import re
import secrets
import string
from dataclasses import dataclass

from llm_runtime.errors import ParameterError

from .bounded_schema import bounded_schema
from .strict_schema import strict_schema

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")  # OpenAI's rule for function names
CHOICES = ("none", "auto", "required")


@dataclass(frozen=True)
class Tool:
    """One function the model may call; `parameters` is its arguments' JSON schema."""

    name: str
    description: str = ""
    parameters: dict | None = None
    strict: bool = False

    def schema(self) -> dict:
        """The arguments' schema (an empty object schema when the tool takes none); a strict tool's takes no
        properties beyond its own."""
        schema = self.parameters if self.parameters is not None else {"type": "object", "properties": {}}
        return strict_schema(schema) if self.strict else schema

    def arguments_schema(self) -> dict:
        """The schema a call's arguments are generated under: `schema()` closed to the properties it declares
        and with every string and array bounded (bounded_schema.py), strict or not."""
        return bounded_schema(self.schema())

    def openai(self) -> dict:
        """The tool as OpenAI spells it, which is what chat templates are given."""
        function = {"name": self.name, "description": self.description, "parameters": self.schema()}
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON object as text, as OpenAI returns it

    def openai(self) -> dict:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def new_call_id(alphanumeric: int = 0) -> str:
    """`call_` plus 24 hex digits, or `alphanumeric` letters and digits (Mistral's templates want 9)."""
    if alphanumeric:
        return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(alphanumeric))
    return f"call_{secrets.token_hex(12)}"


def parse_tools(tools, param: str = "tools") -> tuple[Tool, ...]:
    """OpenAI's `tools` list (function tools) -> Tools; ParameterError on anything else."""
    out = []
    for i, tool in enumerate(_tool_list(tools, param)):
        where = f"{param}[{i}]"
        fn = _function_tool(tool, where, param).get("function")
        if not isinstance(fn, dict):
            raise ParameterError(param, f"{where}.function must be an object with a name")
        out.append(_function(fn, where + ".function", param))
    return _unique(out, param)


def parse_responses_tools(tools, param: str = "tools") -> tuple[Tool, ...]:
    """The Responses API's `tools`: function tools flat (`{"type": "function", "name", "description",
    "parameters", "strict"}`), checked as chat's are."""
    return _unique([_function(_function_tool(tool, f"{param}[{i}]", param), f"{param}[{i}]", param)
                    for i, tool in enumerate(_tool_list(tools, param))], param)


def _tool_list(tools, param: str) -> list:
    if tools is None:
        return []
    if not isinstance(tools, (list, tuple)):
        raise ParameterError(param, f"must be a list of tools, got {type(tools).__name__}")
    return list(tools)


def _function_tool(tool, where: str, param: str) -> dict:
    if not isinstance(tool, dict) or tool.get("type", "function") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
        raise ParameterError(param, f"{where}: only function tools are supported, got {kind!r}")
    return tool


def _unique(tools: list[Tool], param: str) -> tuple[Tool, ...]:
    names = [t.name for t in tools]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ParameterError(param, f"{param}[{i}]: the function name {name!r} is used twice")
    return tuple(tools)


def parse_responses_tool_choice(choice, tools: tuple[Tool, ...], param: str = "tool_choice") -> str:
    """The Responses API's `tool_choice`: "none", "auto", "required" or `{"type": "function", "name": ...}` (flat);
    hosted tools' choices (file_search, web_search_preview, mcp, ...) name tools this server has not."""
    if isinstance(choice, dict):
        if choice.get("type") != "function":
            raise ParameterError(param, f"only function tools can be chosen here, got {choice.get('type')!r}")
        if not isinstance(choice.get("name"), str):
            raise ParameterError(param, "must be none, auto, required or {'type': 'function', 'name': ...}")
        choice = {"type": "function", "function": {"name": choice["name"]}}
    return parse_tool_choice(choice, tools, param)


def parse_functions(functions, param: str = "functions") -> tuple[Tool, ...]:
    """The legacy `functions` list (bare function objects)."""
    if not isinstance(functions, (list, tuple)):
        raise ParameterError(param, f"must be a list of functions, got {type(functions).__name__}")
    return parse_tools([{"type": "function", "function": f} for f in functions], param)


def _function(fn: dict, where: str, param: str) -> Tool:
    name = fn.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ParameterError(param, f"{where}.name must be 1-64 letters, digits, '_', '.' or '-', got {name!r}")
    description = fn.get("description") or ""
    if not isinstance(description, str):
        raise ParameterError(param, f"{where}.description must be a string")
    parameters = fn.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise ParameterError(param, f"{where}.parameters must be a JSON schema object")
    strict = fn.get("strict") or False
    if not isinstance(strict, bool):
        raise ParameterError(param, f"{where}.strict must be true or false")
    return Tool(name, description, parameters, strict)


def parse_tool_choice(choice, tools: tuple[Tool, ...], param: str = "tool_choice") -> str:
    """"none", "auto", "required" or a tool's name (`{"type": "function", "function": {"name": ...}}`)."""
    if choice is None:
        return "auto" if tools else "none"
    if isinstance(choice, str):
        if choice not in CHOICES:
            raise ParameterError(param, f"must be one of {', '.join(CHOICES)} or a named function, got {choice!r}")
        if choice == "required" and not tools:
            raise ParameterError(param, "is 'required' but no tools were given")
        return choice
    function = choice.get("function") if isinstance(choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if isinstance(choice, dict) and "name" in choice and name is None:  # legacy function_call={"name": ...}
        name = choice["name"]
    if not isinstance(name, str):
        raise ParameterError(param, "must be a string or {'type': 'function', 'function': {'name': ...}}")
    if name not in {t.name for t in tools}:
        raise ParameterError(param, f"names the function {name!r}, which is not among the tools")
    return name


def arguments_text(arguments) -> str:
    """A call's arguments as JSON text: dicts are dumped; text is kept as the model or client wrote it."""
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
