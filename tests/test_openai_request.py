"""The one request mapping: every door (API, CLI, server, batch) gives the same SamplingParams for the same body."""
import argparse
import json

import pytest
from pydantic import ValidationError
from tool_templates import QWEN25

from llm_runtime import SamplingParams
from llm_runtime.batch.request import BatchRequest
from llm_runtime.chat.template import ChatTemplate
from llm_runtime.cli.sampling_args import CLI_TEMPERATURE, add_sampling_arguments, sampling_params
from llm_runtime.errors import ParameterError
from llm_runtime.openai.request import parse_request, request_params
from llm_runtime.openai.response_format import format_constraint
from llm_runtime.sampling.params import DEFAULT_TEMPERATURE
from llm_runtime.server.completions import parse
from llm_runtime.server.errors import APIError
from llm_runtime.server.response_request import parse_responses
from llm_runtime.server.response_schemas import ResponsesBody
from llm_runtime.server.schemas import ChatRequest, CompletionRequest
from llm_runtime.structured.constraint import Constraint
from llm_runtime.tools.strict_schema import strict_schema

MSGS = [{"role": "user", "content": "hi"}]
BODIES = [  # sampling fields as a client sends them; each door adds its own prompt or messages
    {},
    {"temperature": 0.7, "top_p": 0.9, "seed": 11, "max_tokens": 33, "stop": ["\n\n", "END"]},
    {"temperature": 0, "presence_penalty": 0.5, "frequency_penalty": -0.5, "min_tokens": 2, "max_tokens": 9},
    {"top_k": 40, "min_p": 0.05, "repetition_penalty": 1.3, "ignore_eos": True, "stop": "x"},
    {"temperature": 1.5, "seed": -3},
    {"temperature": 0.8, "typical_p": 0.5, "seed": 5},
]
CLI_FLAGS = {"max_tokens": "--max-tokens", "min_tokens": "--min-tokens", "temperature": "--temperature",
             "top_k": "--top-k", "top_p": "--top-p", "min_p": "--min-p", "repetition_penalty": "--repetition-penalty",
             "presence_penalty": "--presence-penalty", "frequency_penalty": "--frequency-penalty", "seed": "--seed",
             "typical_p": "--typical-p"}


def server_params(body: dict, chat: bool) -> SamplingParams:
    """What the server's routes do with a body: the pydantic model, then the one mapping."""
    if chat:
        return parse(ChatRequest.model_validate({"model": "m", "messages": MSGS, **body}).body(), "chat").params
    return parse(CompletionRequest.model_validate({"model": "m", "prompt": "p", **body}).body(),
                 "completions").params


def batch_params(body: dict, chat: bool) -> SamplingParams:
    line = {"custom_id": "a", **({"messages": MSGS} if chat else {"prompt": "p"}), **body}
    wrapped = {"custom_id": "b", "url": "/v1/chat/completions" if chat else "/v1/completions",
               "body": {"model": "m", **({"messages": MSGS} if chat else {"prompt": "p"}), **body}}
    a, b = (BatchRequest.parse(json.dumps(x).encode(), 1).params for x in (line, wrapped))
    assert a == b
    return a


def cli_params(body: dict) -> SamplingParams:
    p = argparse.ArgumentParser()
    add_sampling_arguments(p)
    argv = []
    for key, value in body.items():
        if key == "stop":
            for s in [value] if isinstance(value, str) else value:
                argv += ["--stop", s]
        elif key == "ignore_eos":
            argv += ["--ignore-eos"] if value else []
        else:
            argv += [CLI_FLAGS[key], str(value)]
    return sampling_params(p.parse_args(argv))


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_every_door_gives_the_same_sampling_params(body):
    api = SamplingParams(**body)
    for chat in (True, False):
        assert server_params(body, chat) == batch_params(body, chat) == api
    # the command line is greedy unless told otherwise (its --help says so): the same body with that default
    assert cli_params(body) == SamplingParams(**{"temperature": CLI_TEMPERATURE, **body})


def test_left_out_means_the_same_everywhere():
    left_out = server_params({}, True)
    assert left_out == server_params({}, False) == batch_params({}, True) == SamplingParams()
    assert (left_out.temperature, left_out.max_tokens) == (DEFAULT_TEMPERATURE, None)  # None: min(1024, room)
    assert cli_params({"temperature": DEFAULT_TEMPERATURE}) == left_out


def test_four_stop_strings_is_the_http_doors_limit_only():
    codex = ["\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif"]
    with pytest.raises(ValidationError) as e:  # the server's body: OpenAI's limit of 4
        ChatRequest.model_validate({"model": "m", "messages": MSGS, "stop": codex[:5]})
    assert e.value.errors()[0]["loc"][0] == "stop"
    assert server_params({"stop": codex[:4]}, True).stop == tuple(codex[:4])
    for chat in (True, False):  # batch lines, the command line and the Python API take any number
        assert batch_params({"stop": codex}, chat).stop == tuple(codex)
    assert cli_params({"stop": codex}).stop == SamplingParams(stop=codex).stop == tuple(codex)


def test_stop_token_ids_have_a_count_limit_at_the_http_door():
    ChatRequest.model_validate({"model": "m", "messages": MSGS, "stop_token_ids": list(range(256))})
    with pytest.raises(ValidationError) as e:
        ChatRequest.model_validate({"model": "m", "messages": MSGS, "stop_token_ids": list(range(257))})
    assert e.value.errors()[0]["loc"] == ("stop_token_ids",)
    assert len(batch_params({"stop_token_ids": list(range(300))}, True).stop_token_ids) == 300


def test_typical_p_through_the_responses_body():
    body = ResponsesBody.model_validate({"model": "m", "input": "hi", "typical_p": 0.5}).body()
    assert parse_responses(body).params.typical_p == 0.5
    with pytest.raises(ValidationError) as e:  # out of range: refused at the edge, naming the field, as top_p is
        ResponsesBody.model_validate({"model": "m", "input": "hi", "typical_p": 0})
    assert e.value.errors()[0]["loc"] == ("typical_p",)
    with pytest.raises(ParameterError, match="^typical_p must be > 0, got 0$"):
        request_params({"typical_p": 0}, "chat")


def test_logprobs_map_per_endpoint():
    chat = parse_request({"messages": MSGS, "logprobs": True, "top_logprobs": 3}, "chat").params
    legacy = parse_request({"prompt": "p", "logprobs": 3}, "completions").params
    assert (chat.logprobs, chat.top_logprobs) == (legacy.logprobs, legacy.top_logprobs) == (True, 3)
    assert parse_request({"prompt": "p", "logprobs": 0}, "completions").params.logprobs
    with pytest.raises(ParameterError) as e:
        parse_request({"prompt": "p", "logprobs": 21}, "completions")
    assert e.value.param == "logprobs"


def test_max_tokens_and_max_completion_tokens_must_agree():
    assert request_params({"max_completion_tokens": 7}, "chat").max_tokens == 7
    assert request_params({"max_completion_tokens": 7, "max_tokens": 7}, "chat").max_tokens == 7
    with pytest.raises(ParameterError) as e:
        request_params({"max_completion_tokens": 7, "max_tokens": 8}, "chat")
    assert e.value.param == "max_tokens"


def test_choices_derive_their_seeds():
    r = parse_request({"messages": MSGS, "n": 3, "seed": 2**63 - 2}, "chat")
    assert [r.choice_params(j).seed for j in range(3)] == [2**63 - 2, 2**63 - 1, -(2**63)]  # wraps
    assert parse_request({"messages": MSGS, "n": 2}, "chat").choice_params(1).seed is None


@pytest.mark.parametrize("prompt, want", [
    ("a", ["a"]), (["a", "b"], ["a", "b"]), ([5, 6], [[5, 6]]), ([[5], [6, 7]], [[5], [6, 7]]),
])
def test_legacy_prompt_forms(prompt, want):
    r = parse_request({"prompt": prompt, "n": 2}, "completions")
    assert r.prompts == want and r.choices == 2 * len(want)


@pytest.mark.parametrize("body, param, code", [
    ({"prompt": []}, "prompt", None),
    ({"prompt": [[]]}, "prompt", None),
    ({"prompt": ["a", 5]}, "prompt", None),
    ({"prompt": [True]}, "prompt", None),
    ({"prompt": "p", "echo": True, "logprobs": 1}, "echo", "unsupported_value"),
    ({"prompt": "p", "best_of": 2}, "best_of", "unsupported_value"),
    ({"prompt": "p", "n": 2, "best_of": 1}, "best_of", None),
    ({"prompt": "p", "suffix": "s"}, "suffix", "unsupported_parameter"),
    ({"prompt": "p", "stream_options": {"include_usage": True}}, "stream_options", "invalid_value"),
    ({"prompt": "p", "stream": "yes"}, "stream", None),
    ({"prompt": "p", "made_up": 1}, "made_up", "unknown_parameter"),
    ({"messages": MSGS, "tools": [{"type": "retrieval"}]}, "tools", None),
    ({"messages": MSGS, "response_format": {"type": "xml"}}, "response_format", "invalid_value"),
    ({"messages": MSGS, "response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}, "response_format",
     "missing_required_parameter"),
    ({"messages": MSGS, "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": []}}},
     "response_format", None),
    ({"messages": MSGS, "response_format": {"type": "json_object"}, "regex": "a+"}, "regex", None),
    ({"messages": MSGS, "tool_choice": "required"}, "tool_choice", None),
    ({"messages": MSGS, "parallel_tool_calls": "no"}, "parallel_tool_calls", None),
    ({"messages": MSGS, "functions": [{"name": "f"}]}, "functions", "unsupported_parameter"),
    ({"messages": MSGS, "echo": True}, "echo", "unknown_parameter"),  # a completions field, not a chat one
    ({"messages": []}, "messages", None),
    ({}, "messages", None),
])
def test_refusals_name_the_field(body, param, code):
    endpoint = "chat" if "messages" in body or not body else "completions"
    with pytest.raises(ParameterError) as e:
        parse_request(body, endpoint)
    assert (e.value.param, e.value.code) == (param, code)
    if code in ("unsupported_parameter", "unknown_parameter"):
        assert param in str(e.value)


def test_neutral_values_and_nulls_run():
    r = parse_request({"messages": MSGS, "tool_choice": "none", "tools": [], "response_format": {"type": "text"},
                       "temperature": None, "user": "u", "metadata": {"a": "b"}, "store": False}, "chat")
    assert r.params == SamplingParams()


def test_server_reports_the_mapping_errors_as_400():
    with pytest.raises(APIError) as e:
        parse({"model": "m", "prompt": "p", "suffix": "s"}, "completions")
    assert (e.value.status, e.value.param, e.value.code) == (400, "suffix", "unsupported_parameter")


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {
    "city": {"type": "string"}}}}}


def test_response_format_regex_and_grammar_become_the_constraint():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": False}
    cases = [
        ({"response_format": {"type": "json_object"}}, Constraint.json_object("response_format")),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}},
         Constraint.json_schema(schema, "response_format")),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
         Constraint.json_object("response_format")),
        ({"regex": "[0-9]+"}, Constraint("regex", "[0-9]+")),
        ({"grammar": 'start: "a"'}, Constraint("grammar", 'start: "a"')),
    ]
    for fields, want in cases:
        for body, endpoint in (({"messages": MSGS, **fields}, "chat"), ({"prompt": "p", **fields}, "completions")):
            assert parse_request(body, endpoint).params.constraint == want, fields


def test_responses_text_format_reads_the_flat_shape():
    schema = {"type": "object"}
    flat = {"type": "json_schema", "name": "x", "schema": schema, "strict": False}
    assert format_constraint(flat, "text.format") == Constraint.json_schema(schema, "text.format")
    assert format_constraint({"type": "text"}) is None and format_constraint(None) is None


def test_tools_map_to_a_tool_request_in_the_templates_format():
    r = parse_request({"messages": MSGS, "tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False},
                      "chat")
    assert (r.tool_choice, r.parallel_tool_calls, [t.name for t in r.tools]) == ("required", False, ["get_weather"])
    tools = r.tool_request(ChatTemplate(QWEN25))
    assert tools.fmt.native and tools.enforced
    assert "<tool_call>" in tools.prompt(ChatTemplate(QWEN25), r.messages)
    assert parse_request({"messages": MSGS, "tools": [WEATHER]}, "chat").tool_choice == "auto"
    assert parse_request({"messages": MSGS, "tools": []}, "chat").tool_request(ChatTemplate(QWEN25)) is None


def test_a_strict_schema_takes_no_extra_properties_at_any_depth():
    schema = {"type": "object", "properties": {"a": {"type": "object", "properties": {"type": {"type": "string"}}},
                                               "b": {"type": "array", "items": {"$ref": "#/$defs/p"}}},
              "$defs": {"p": {"properties": {"x": {"type": "integer"}}}}}
    got = strict_schema(schema)
    assert got["additionalProperties"] is False and got["properties"]["a"]["additionalProperties"] is False
    assert got["$defs"]["p"]["additionalProperties"] is False
    assert "additionalProperties" not in got["properties"]["a"]["properties"]["type"]  # a property named "type"
    assert "additionalProperties" not in schema  # a copy
    loose = format_constraint({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert loose == Constraint.json_schema(schema, "response_format")  # strict left out: the schema as given
