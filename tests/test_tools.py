"""OpenAI `tools` and `tool_choice` validation."""
from __future__ import annotations

import pytest

from llm_runtime.errors import ParameterError
from llm_runtime.tools.tool import (
    new_call_id,
    parse_functions,
    parse_responses_tool_choice,
    parse_responses_tools,
    parse_tool_choice,
    parse_tools,
)

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def test_tools_parse():
    (tool,) = parse_tools([WEATHER])
    assert tool.name == "get_weather" and tool.schema() == {"type": "object"} and tool.openai()["type"] == "function"
    (bare,) = parse_tools([{"type": "function", "function": {"name": "ping"}}])
    assert bare.schema() == {"type": "object", "properties": {}}
    assert parse_functions([{"name": "ping"}])[0].name == "ping"
    assert parse_tools(None) == ()


@pytest.mark.parametrize("tools, message", [
    ("get_weather", "must be a list"),
    ([{"type": "code_interpreter"}], "only function tools"),
    ([{"type": "function"}], "function must be an object"),
    ([{"type": "function", "function": {"name": "has space"}}], "name must be 1-64"),
    ([{"type": "function", "function": {"name": "f", "parameters": "object"}}], "parameters must be a JSON schema"),
    ([WEATHER, WEATHER], "used twice"),
])
def test_bad_tools(tools, message):
    with pytest.raises(ParameterError, match=message) as e:
        parse_tools(tools)
    assert e.value.param == "tools"


def test_tool_choice():
    tools = parse_tools([WEATHER])
    assert parse_tool_choice(None, tools) == "auto" and parse_tool_choice(None, ()) == "none"
    assert parse_tool_choice("required", tools) == "required"
    assert parse_tool_choice({"type": "function", "function": {"name": "get_weather"}}, tools) == "get_weather"
    assert parse_tool_choice({"name": "get_weather"}, tools) == "get_weather"  # legacy function_call
    for bad, message in (("always", "must be one of"), ({"type": "function", "function": {"name": "nope"}}, "not among"),
                         (3, "must be a string")):
        with pytest.raises(ParameterError, match=message):
            parse_tool_choice(bad, tools)
    with pytest.raises(ParameterError, match="no tools"):
        parse_tool_choice("required", ())


def test_call_ids():
    assert new_call_id().startswith("call_") and new_call_id() != new_call_id()
    assert len(new_call_id(9)) == 9 and new_call_id(9).isalnum()


def test_a_strict_tool_takes_no_extra_arguments_and_responses_tools_read_flat():
    params = {"type": "object", "properties": {"city": {"type": "string"}}}
    (loose,) = parse_tools([{"type": "function", "function": {"name": "f", "parameters": params}}])
    (strict,) = parse_tools([{"type": "function", "function": {"name": "f", "parameters": params, "strict": True}}])
    assert loose.schema() == params and strict.schema() == {**params, "additionalProperties": False}
    flat = parse_responses_tools([{"type": "function", "name": "f", "description": "d", "parameters": params,
                                   "strict": True}])
    assert flat == (strict.__class__("f", "d", params, True),)
    with pytest.raises(ParameterError, match="only function tools"):
        parse_responses_tools([{"type": "web_search"}])


def test_responses_tool_choice_is_flat_and_names_only_functions():
    tools = parse_responses_tools([{"type": "function", "name": "f"}])
    assert parse_responses_tool_choice({"type": "function", "name": "f"}, tools) == "f"
    assert parse_responses_tool_choice("required", tools) == "required"
    assert parse_responses_tool_choice(None, tools) == "auto" and parse_responses_tool_choice(None, ()) == "none"
    with pytest.raises(ParameterError, match="only function tools can be chosen"):
        parse_responses_tool_choice({"type": "file_search"}, tools)
    with pytest.raises(ParameterError, match="not among the tools"):
        parse_responses_tool_choice({"type": "function", "name": "g"}, tools)
    with pytest.raises(ParameterError, match="must be none, auto, required"):
        parse_responses_tool_choice({"type": "function", "function": {"name": "f"}}, tools)
