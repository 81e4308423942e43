"""Tool calls are generated under the declared schema, closed and bounded: no invented keys, no string, array or
run of calls without an end. The default model, offered a free (non-strict) schema with no max_tokens, once
wrote 34 identical calls in one reply, or 1024 tokens of keys the schema never declared."""
from __future__ import annotations

import json

import jsonschema
import pytest

from llm_runtime import SamplingParams
from llm_runtime.sampling.params import DEFAULT_MAX_TOKENS
from llm_runtime.tools.bounded_schema import MAX_ARRAY_ITEMS, MAX_STRING_CHARS, bounded_schema
from llm_runtime.tools.format import MAX_CALLS

FREE = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}  # not strict
WEATHER = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                             "parameters": FREE}}]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def test_a_free_schema_is_closed_and_bounded_at_every_depth():
    schema = {"type": "object", "properties": {
        "name": {"type": "string"}, "tags": {"type": "array", "items": {"type": ["string", "null"]}},
        "place": {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]{2}$"}}}}}
    got = bounded_schema(schema)
    assert got["additionalProperties"] is False and got["properties"]["place"]["additionalProperties"] is False
    assert got["properties"]["name"]["maxLength"] == MAX_STRING_CHARS
    assert got["properties"]["tags"]["maxItems"] == MAX_ARRAY_ITEMS
    assert got["properties"]["tags"]["items"]["maxLength"] == MAX_STRING_CHARS
    assert "maxLength" not in got["properties"]["place"]["properties"]["code"]  # a pattern bounds itself
    assert "maxLength" not in schema["properties"]["name"]  # a copy: the caller's schema is left as given


def test_a_schema_that_states_its_own_bounds_keeps_them():
    schema = {"type": "object", "properties": {"note": {"type": "string", "maxLength": 5000},
                                               "ids": {"type": "array", "maxItems": 100}},
              "additionalProperties": {"type": "integer"}}
    got = bounded_schema(schema)
    assert got["properties"]["note"]["maxLength"] == 5000 and got["properties"]["ids"]["maxItems"] == 100
    assert got["additionalProperties"] == {"type": "integer"}


@pytest.mark.parametrize("choice, seeds", [("required", (1, 2)), ("auto", (1, 4))])
def test_calls_on_a_free_schema_end_parse_and_validate(smol_llm, choice, seeds):
    """Seed 1 of "required" repeats one call; seed 4 of "auto" invents odd values: each reply ends by the grammar
    (not by max_tokens) with at most MAX_CALLS calls, every one of them valid under the declared schema."""
    closed = {**FREE, "additionalProperties": False}
    for seed in seeds:
        reply = smol_llm.chat(ASK, SamplingParams(temperature=1.0, seed=seed), tools=WEATHER, tool_choice=choice)
        assert reply.finish_reason == "tool_calls", (seed, reply)
        assert 1 <= len(reply.tool_calls) <= MAX_CALLS
        assert reply.usage.completion_tokens < DEFAULT_MAX_TOKENS
        for call in reply.tool_calls:
            arguments = json.loads(call.arguments)
            jsonschema.validate(arguments, closed)
            assert len(arguments["city"]) <= MAX_STRING_CHARS
