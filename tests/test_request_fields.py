"""Every field of each endpoint, through the real server and the official openai client: supported fields run,
unsupported ones are a 400 naming them, hints run and change nothing, unknown ones are refused as OpenAI does.
The cases must name every row of the policy table, so a new row cannot go untested."""
import inspect

import openai
import pytest
from server_process import serving
from test_tool_request import tool_model_folder

from llm_runtime.openai.fields import FIELDS, Policy

KEY = "fields-key"
MSGS = [{"role": "user", "content": "Say something."}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
OK, HINT = "ok", "hint"
UNSUPPORTED, UNKNOWN, VALUE = "unsupported_parameter", "unknown_parameter", "unsupported_value"

COMMON = {  # field -> (value, expected, extra fields the case needs)
    "model": ("tiny", OK, {}),
    "max_tokens": (3, OK, {}),
    "temperature": (0.5, OK, {}),
    "top_p": (0.9, OK, {}),
    "n": (2, OK, {}),
    "stop": (["zz"], OK, {}),
    "seed": (3, OK, {}),
    "presence_penalty": (0.5, OK, {}),
    "frequency_penalty": (0.5, OK, {}),
    "logit_bias": ({"5": 1.0}, OK, {}),
    "stream": (True, OK, {}),
    "stream_options": ({"include_usage": True}, OK, {"stream": True}),
    "user": ("user-1", HINT, {}),
    "top_k": (5, OK, {}),
    "min_p": (0.1, OK, {}),
    "typical_p": (0.9, OK, {}),
    "repetition_penalty": (1.2, OK, {}),
    "min_tokens": (1, OK, {}),
    "ignore_eos": (True, OK, {}),
    "stop_token_ids": ([7], OK, {}),
    "response_format": ({"type": "json_object"}, OK, {}),
    "regex": ("[a-z]+", OK, {}),
    "grammar": ('start: "yes" | "no"', OK, {}),
}
CASES = {
    "chat": {
        **COMMON,
        "messages": (MSGS, OK, {}),
        "max_completion_tokens": (3, OK, {}),
        "logprobs": (True, OK, {}),
        "top_logprobs": (2, OK, {"logprobs": True}),
        "tools": ([TOOL], OK, {}),
        "tool_choice": ("required", OK, {"tools": [TOOL]}),
        "parallel_tool_calls": (False, OK, {"tools": [TOOL]}),
        "functions": ([{"name": "f", "parameters": {}}], UNSUPPORTED, {}),
        "function_call": ("auto", UNSUPPORTED, {}),
        "modalities": (["text", "audio"], UNSUPPORTED, {}),
        "audio": ({"voice": "alloy", "format": "wav"}, UNSUPPORTED, {}),
        "web_search_options": ({}, UNSUPPORTED, {}),
        "reasoning_effort": ("low", UNSUPPORTED, {}),
        "verbosity": ("low", UNSUPPORTED, {}),
        "moderation": ({"model": "omni-moderation-latest"}, UNSUPPORTED, {}),
        "prediction": ({"type": "content", "content": "Say"}, OK, {}),
        "store": (True, HINT, {}),
        "metadata": ({"k": "v"}, HINT, {}),
        "service_tier": ("auto", HINT, {}),
        "prompt_cache_key": ("conversation-1", HINT, {}),
        "prompt_cache_retention": ("24h", HINT, {}),
        "prompt_cache_options": ({}, HINT, {}),
        "safety_identifier": ("user-hash", HINT, {}),
    },
    "completions": {
        **COMMON,
        "prompt": ("Once upon a time", OK, {}),
        "logprobs": (2, OK, {}),
        "echo": (True, OK, {}),
        "best_of": (1, OK, {}),
        "suffix": ("the end", UNSUPPORTED, {}),
    },
}
CASES["responses"] = {
    "model": ("tiny", OK, {}),
    "input": ("Say something.", OK, {}),
    "instructions": ("Be brief.", OK, {}),
    "previous_response_id": (None, OK, {}),  # a stored id: tests/test_responses.py
    "store": (False, OK, {}),
    "metadata": ({"k": "v"}, OK, {}),
    "max_output_tokens": (3, OK, {}),
    "temperature": (0.5, OK, {}),
    "top_p": (0.9, OK, {}),
    "top_logprobs": (2, OK, {"include": ["message.output_text.logprobs"]}),
    "include": (["message.output_text.logprobs"], OK, {}),
    "stream": (True, OK, {}),
    **{k: COMMON[k] for k in ("seed", "stop", "top_k", "min_p", "typical_p", "repetition_penalty", "min_tokens",
                              "ignore_eos", "stop_token_ids", "presence_penalty", "frequency_penalty")},
    "text": ({"format": {"type": "json_object"}}, OK, {}),
    "tools": ([{"type": "function", "name": "f", "parameters": {}}], OK, {}),
    "tool_choice": ("required", OK, {"tools": [{"type": "function", "name": "f", "parameters": {}}]}),
    "parallel_tool_calls": (False, OK, {}),
    "max_tool_calls": (2, HINT, {}),
    "reasoning": ({"effort": "low"}, UNSUPPORTED, {}),
    "truncation": ("auto", UNSUPPORTED, {}),
    "background": (True, UNSUPPORTED, {}),
    "conversation": ("conv_1", UNSUPPORTED, {}),
    "prompt": ({"id": "pmpt_1"}, UNSUPPORTED, {}),
    "context_management": ([{"type": "compaction"}], UNSUPPORTED, {}),
    "moderation": ({"model": "omni-moderation-latest"}, UNSUPPORTED, {}),
    "stream_options": ({"include_obfuscation": False}, HINT, {}),
    "user": ("user-1", HINT, {}),
    "safety_identifier": ("user-hash", HINT, {}),
    "service_tier": ("auto", HINT, {}),
    "prompt_cache_key": ("conversation-1", HINT, {}),
    "prompt_cache_retention": ("24h", HINT, {}),
    "prompt_cache_options": ({}, HINT, {}),
}
EXTRA = {  # values and fields beyond one row each: neutral values, refused values, unknown fields
    "chat": [("tools", [], OK), ("tool_choice", "none", OK), ("response_format", {"type": "text"}, OK),
             ("response_format", {"type": "xml"}, "invalid_value"), ("tool_choice", {"type": "function",
              "function": {"name": "f"}}, None), ("modalities", ["text"], OK), ("made_up", 1, UNKNOWN),
             ("echo", True, UNKNOWN)],
    "completions": [("best_of", 3, VALUE), ("made_up", {"a": 1}, UNKNOWN), ("messages", MSGS, UNKNOWN)],
    "responses": [("text", {"format": {"type": "text"}}, OK), ("text", {"format": {"type": "xml"}}, "invalid_value"),
                  ("text", {"verbosity": "low"}, UNSUPPORTED), ("tools", [], OK), ("tool_choice", "auto", OK),
                  ("truncation", "disabled", OK), ("background", False, OK), ("reasoning", {}, OK),
                  ("parallel_tool_calls", "yes", None), ("tools", [{"type": "web_search"}], None),
                  ("tools", [{"type": "function", "function": {"name": "f"}}], None),
                  ("tool_choice", {"type": "file_search"}, None), ("tool_choice", "required", None),
                  ("max_tokens", 3, UNKNOWN), ("messages", MSGS, UNKNOWN)],
}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    # a tiny random Qwen2 with Qwen2.5's tools template and a 2048-token context: tool prompts are long
    folder = tool_model_folder(tmp_path_factory.mktemp("fields"), "hermes")
    with serving(folder, "--api-key", KEY, "--served-model-name", "tiny") as base:
        yield openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0)


def test_the_cases_name_every_row():
    for endpoint, rules in FIELDS.items():
        assert set(CASES[endpoint]) == set(rules), endpoint
        for name, (_, expected, _) in CASES[endpoint].items():
            want = {Policy.SUPPORTED: OK, Policy.HINT: HINT}.get(rules[name].policy, UNSUPPORTED)
            assert expected == want or (expected == VALUE and want == OK), name


def call(client, endpoint: str, fields: dict):
    """One request through the official client: the fields it knows as arguments, the others in extra_body."""
    create = {"chat": client.chat.completions.create, "completions": client.completions.create,
              "responses": client.responses.create}[endpoint]
    known = inspect.signature(create).parameters
    if endpoint == "responses":
        base = {"model": "tiny", "temperature": 0, "input": "Say something.", "max_output_tokens": 4}
    else:
        base = {"model": "tiny", "temperature": 0, **({} if "max_completion_tokens" in fields else {"max_tokens": 4})}
        base.update({"messages": MSGS} if endpoint == "chat" else {"prompt": "Once upon a time"})
    args = {**base, **fields}
    kwargs = {k: v for k, v in args.items() if k in known}
    extra = {k: v for k, v in args.items() if k not in known}
    reply = create(**kwargs, extra_body=extra or None)
    if args.get("stream"):
        return list(reply)
    return reply


def text(reply, endpoint: str) -> str:
    if endpoint == "responses":
        return reply.output_text
    return reply.choices[0].message.content if endpoint == "chat" else reply.choices[0].text


def check(client, endpoint: str, fields: dict, expected: str, name: str) -> None:
    if expected in (OK, HINT):
        reply = call(client, endpoint, fields)
        assert reply, name
        if expected == HINT:  # accepted and ignored: the greedy reply is the one without the field
            assert text(reply, endpoint) == text(call(client, endpoint, {}), endpoint)
        return
    with pytest.raises(openai.BadRequestError) as e:
        call(client, endpoint, fields)
    assert (e.value.body["param"], e.value.body["code"]) == (name, expected)
    assert e.value.body["type"] == "invalid_request_error" and name in e.value.body["message"]


@pytest.mark.parametrize("endpoint, name", [(e, n) for e in CASES for n in CASES[e]])
def test_every_field(client, endpoint, name):
    value, expected, needs = CASES[endpoint][name]
    check(client, endpoint, {**needs, name: value}, expected, name)


@pytest.mark.parametrize("endpoint, name, value, expected", [(e, *case) for e in EXTRA for case in EXTRA[e]])
def test_neutral_refused_and_unknown_values(client, endpoint, name, value, expected):
    check(client, endpoint, {name: value}, expected, name)
