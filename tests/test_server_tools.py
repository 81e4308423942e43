"""Tools and structured output through the real server on loopback: the official `openai` client (tool calls,
streamed deltas reassembled, a multi-turn exchange with a tool result, `parse()` with a Pydantic model, schemas
that cannot compile) and LangChain's ChatOpenAI (`bind_tools` with `invoke` and `stream`, `with_structured_output`
in json_schema and function-calling modes). A tiny random Qwen2 speaks Hermes `<tool_call>` through Qwen2.5's
template; the default model (a template without tools) gets the generic JSON format."""
from __future__ import annotations

import json

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field
from server_process import serving
from test_tool_request import ASK, SCHEMAS, TOOLS, tool_model_folder

from llm_runtime import LLM

KEY = "tools-key"
WEATHER_ONLY = [TOOLS[0]]


class Person(BaseModel):
    name: str = Field(max_length=20)
    age: int = Field(ge=0, le=120)


@pytest.fixture(scope="module")
def hermes_folder(tmp_path_factory):
    """A tiny random Qwen2 with Qwen2.5's tools template."""
    return tool_model_folder(tmp_path_factory.mktemp("hermes"), "hermes")


@pytest.fixture(scope="module")
def hermes(hermes_folder):
    """An openai client on a server of `hermes_folder`."""
    with serving(hermes_folder, "--api-key", KEY, "--served-model-name", "tiny") as base:
        yield openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def smol(smollm_build):
    """The base URL of a server of the default model."""
    with serving(smollm_build("int4"), "--api-key", KEY, "--served-model-name", "smol") as base:
        yield base + "/v1"


@pytest.fixture(scope="module")
def smol_client(smol):
    return openai.OpenAI(base_url=smol, api_key=KEY, max_retries=0)


def check_calls(calls, names):
    assert calls
    for call in calls:
        assert call.type == "function" and call.id and call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def reassemble(chunks) -> tuple[str, dict, str]:
    """(content, index -> {id, name, arguments}, finish_reason) from streamed chunks, checking OpenAI's shapes:
    per call index, id, type and name come once, in its first delta; later deltas carry argument fragments."""
    content, calls, reason = "", {}, None
    for chunk in chunks:
        for choice in chunk.choices:
            delta = choice.delta
            content += delta.content or ""
            for part in delta.tool_calls or ():
                if part.index not in calls:
                    assert part.id and part.type == "function" and part.function.name, part
                    calls[part.index] = {"id": part.id, "name": part.function.name, "arguments": ""}
                else:
                    assert part.id is None and part.function.name is None, part
                calls[part.index]["arguments"] += part.function.arguments or ""
            reason = choice.finish_reason or reason
    return content, calls, reason


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "add"}}])
def test_enforced_calls_streamed_and_not_agree(hermes, choice):
    args = dict(model="tiny", messages=ASK, tools=TOOLS, tool_choice=choice, parallel_tool_calls=False,
                temperature=1.0, seed=3, max_tokens=120)
    reply = hermes.chat.completions.create(**args)
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "tool_calls" and message.content is None
    check_calls(message.tool_calls, {"add"} if isinstance(choice, dict) else SCHEMAS)
    content, calls, reason = reassemble(hermes.chat.completions.create(**args, stream=True))
    assert reason == "tool_calls" and "<tool_call>" not in content
    assert [(c["name"], c["arguments"]) for c in calls.values()] == \
        [(c.function.name, c.function.arguments) for c in message.tool_calls]


def test_parallel_calls_stream_one_index_each(hermes):
    for seed in range(6):
        args = dict(model="tiny", messages=ASK, tools=TOOLS, tool_choice="required", temperature=1.0, seed=seed,
                    max_tokens=300)
        reply = hermes.chat.completions.create(**args)
        if len(reply.choices[0].message.tool_calls or ()) > 1:
            break
    else:
        pytest.fail("no seed gave two calls")
    check_calls(reply.choices[0].message.tool_calls, SCHEMAS)
    _, calls, _ = reassemble(hermes.chat.completions.create(**args, stream=True))
    assert sorted(calls) == list(range(len(reply.choices[0].message.tool_calls)))


def test_tool_choice_none_and_auto_never_fail(hermes):
    for choice in ("none", "auto"):
        reply = hermes.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, tool_choice=choice,
                                               temperature=1.0, seed=1, max_tokens=30)
        c = reply.choices[0]
        assert (c.finish_reason == "tool_calls") == bool(c.message.tool_calls)
        if choice == "none":
            assert not c.message.tool_calls and c.finish_reason in ("stop", "length")


def test_a_multi_turn_exchange_with_a_tool_result(smol_client):
    first = smol_client.chat.completions.create(model="smol", messages=ASK, tools=WEATHER_ONLY,
                                                tool_choice="required", parallel_tool_calls=False, temperature=0,
                                                max_tokens=80)
    calls = first.choices[0].message.tool_calls
    check_calls(calls, {"get_weather"})
    history = ASK + [first.choices[0].message.model_dump(exclude_none=True)]
    history += [{"role": "tool", "tool_call_id": c.id, "content": json.dumps({"temperature_c": 21})} for c in calls]
    second = smol_client.chat.completions.create(model="smol", messages=history, tools=WEATHER_ONLY,
                                                 tool_choice="none", temperature=0, max_tokens=40)
    assert second.choices[0].finish_reason in ("stop", "length") and second.choices[0].message.content


def test_generic_format_streams_like_the_reply(smol_client):
    args = dict(model="smol", messages=ASK, tools=TOOLS, tool_choice="required", temperature=1.0, seed=4,
                max_tokens=120, parallel_tool_calls=False)
    message = smol_client.chat.completions.create(**args).choices[0].message
    check_calls(message.tool_calls, SCHEMAS)
    content, calls, reason = reassemble(smol_client.chat.completions.create(**args, stream=True))
    assert reason == "tool_calls" and content == "" and '"tool_calls"' not in content
    assert [(c["name"], c["arguments"]) for c in calls.values()] == \
        [(c.function.name, c.function.arguments) for c in message.tool_calls]


def test_response_format_json_schema_and_parse(smol_client):
    ask = [{"role": "user", "content": "Describe a person as JSON."}]
    schema = Person.model_json_schema()
    for seed in range(3):
        reply = smol_client.chat.completions.create(
            model="smol", messages=ask, temperature=1.0, seed=seed, max_tokens=80,
            response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema,
                                                                    "strict": True}})
        jsonschema.validate(json.loads(reply.choices[0].message.content), schema)
    parsed = smol_client.chat.completions.parse(model="smol", messages=ask, response_format=Person, max_tokens=80)
    assert isinstance(parsed.choices[0].message.parsed, Person)
    obj = smol_client.chat.completions.create(model="smol", messages=ask, response_format={"type": "json_object"},
                                              temperature=0, max_tokens=60)
    if obj.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(obj.choices[0].message.content), dict)


def test_regex_and_grammar_extension_fields(smol_client):
    reply = smol_client.chat.completions.create(model="smol", messages=ASK, max_tokens=20,
                                                extra_body={"regex": "[0-9]{3}-[a-z]{2}"})
    text = reply.choices[0].message.content
    assert len(text) == 6 and text[3] == "-" and text[:3].isdigit()
    reply = smol_client.completions.create(model="smol", prompt="Is it raining?", max_tokens=5,
                                           extra_body={"grammar": 'start: "yes" | "no"'})
    assert reply.choices[0].text in ("yes", "no") and reply.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("fields, param, reason", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {"type": "string"}}}}},
     "response_format", "Unimplemented keys"),
    ({"extra_body": {"regex": "(unclosed"}}, "regex", "regex cannot be enforced"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "x": {"not": {}}}}}}], "tool_choice": "required"}, "tools", "not"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice", "nope"),
    ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, "tool_choice",
     "cannot be combined"),
])
def test_what_cannot_be_enforced_is_a_400_with_the_reason(smol_client, fields, param, reason):
    with pytest.raises(openai.BadRequestError) as e:
        smol_client.chat.completions.create(model="smol", messages=ASK, max_tokens=8, **fields)
    assert e.value.body["param"] == param and reason in e.value.body["message"], e.value.body


def test_langchain_bind_tools_invoke_and_stream(smol):
    from langchain_openai import ChatOpenAI

    def get_weather(city: str, unit: str) -> str:
        """Current weather in a city; unit is celsius or fahrenheit."""
        return "21"

    chat = ChatOpenAI(model="smol", base_url=smol, api_key=KEY, temperature=0, max_tokens=80, max_retries=0)
    bound = chat.bind_tools([get_weather], tool_choice="get_weather")
    message = bound.invoke("What is the weather in Paris?")
    assert [c["name"] for c in message.tool_calls] == ["get_weather"] and "city" in message.tool_calls[0]["args"]
    chunks = list(bound.stream("What is the weather in Paris?"))
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk
    assert [(c["name"], c["args"]) for c in whole.tool_calls] == [(c["name"], c["args"]) for c in message.tool_calls]


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_with_structured_output(smol, method):
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(model="smol", base_url=smol, api_key=KEY, temperature=1.0, seed=2, max_tokens=80,
                      max_retries=0)
    # strict: the small model keeps adding keys to an object that allows them, until max_tokens
    person = chat.with_structured_output(Person, method=method, strict=True).invoke("Describe a person.")
    assert isinstance(person, Person)


def test_a_tool_call_history_without_tools_uses_the_template_s_own_turns(hermes, hermes_folder):
    """Chat with an earlier call and its result but no `tools`: the template renders them as it does with tools
    (Qwen2.5's <tool_call> and <tool_response> turns), just without a tool list."""
    history = ASK + [{"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                      "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}]},
                     {"role": "tool", "tool_call_id": "call_1", "content": "5"}]
    r = hermes.chat.completions.create(model="tiny", messages=history, max_tokens=3)
    llm = LLM(hermes_folder)
    prompt = llm.render_chat(history)
    assert '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>' in prompt
    assert "<tool_response>\n5\n</tool_response>" in prompt and "<tools>" not in prompt
    assert r.usage.prompt_tokens == len(llm.encode(prompt, special=False))
