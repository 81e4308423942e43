"""Function tools through /v1/responses over real HTTP on loopback, driven by the official openai client: a tiny
random Qwen2 speaks Hermes `<tool_call>` through Qwen2.5's template. Calls come out as function_call items, streamed
as OpenAI streams them (the arguments' deltas reassemble to the non-streamed call); tool_choice required, named,
none and auto; a two-turn exchange where the stored call and its function_call_output continue the conversation
through previous_response_id, and the prompt cache the second turn reuses shows in its usage."""
from __future__ import annotations

import dataclasses
import json
import re

import httpx
import jsonschema
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter
from server_process import serving
from test_tool_request import ASK, SCHEMAS, TOOLS, tool_model_folder

from llm_runtime import LLM
from llm_runtime.chat.messages import normalize_messages
from llm_runtime.tools.request import ToolRequest

KEY = "responses-tools-key"
FLAT = [{"type": "function", **t["function"]} for t in TOOLS]  # the Responses API's shape
EVENT = TypeAdapter(ResponseStreamEvent)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tool_model_folder(tmp_path_factory.mktemp("responses-hermes"), "hermes")


@pytest.fixture(scope="module")
def server(folder):
    with serving(folder, "--api-key", KEY, "--served-model-name", "tiny") as base:
        yield base


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0)


def check_calls(output, names) -> list:
    calls = [o for o in output if o.type == "function_call"]
    assert calls
    for call in calls:
        assert call.id.startswith("fc_") and call.call_id.startswith("call_") and call.name in names
        assert call.status == "completed"
        jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])
    return calls


def reassemble(events) -> list[dict]:
    """The output items a stream builds, checking OpenAI's order per item: output_item.added (a function call's
    with empty arguments), its deltas, its done events, output_item.done; sequence numbers 0, 1, 2, ..."""
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    items, open_item = [], None
    for e in events[2:-1]:
        if e.type == "response.output_item.added":
            assert open_item is None and e.output_index == len(items)
            open_item = e.item.to_dict()
            if e.item.type == "function_call":
                assert e.item.arguments == "" and e.item.status == "in_progress"
        elif e.type == "response.output_item.done":
            assert open_item is not None and e.output_index == len(items) and e.item.id == open_item["id"]
            items.append(e.item.to_dict())
            open_item = None
        elif e.type.startswith("response.function_call_arguments."):
            assert open_item["type"] == "function_call" and e.item_id == open_item["id"]
            assert e.output_index == len(items)
            if e.type.endswith(".delta"):
                open_item["arguments"] += e.delta
            else:
                assert e.arguments == open_item["arguments"]
        else:
            assert open_item["type"] == "message" and e.item_id == open_item["id"], e.type
    assert open_item is None
    return items


def same_calls(a: list[dict], b: list) -> bool:
    return [(x["type"], x.get("name"), x.get("arguments")) for x in a] == \
        [(y.type, getattr(y, "name", None), getattr(y, "arguments", None)) for y in b]


@pytest.mark.parametrize("choice", ["required", {"type": "function", "name": "add"}])
def test_enforced_calls_streamed_and_not_agree(client, choice):
    args = dict(model="tiny", input=ASK, tools=FLAT, tool_choice=choice, parallel_tool_calls=False, temperature=1.0,
                max_output_tokens=120, extra_body={"seed": 3})
    r = client.responses.create(**args)
    Response.model_validate(r.to_dict())
    assert r.status == "completed" and [o.type for o in r.output] == ["function_call"]
    check_calls(r.output, {"add"} if isinstance(choice, dict) else SCHEMAS)
    assert r.tool_choice.to_dict() == choice if isinstance(choice, dict) else r.tool_choice == choice
    assert [t.name for t in r.tools] == ["get_weather", "add"] and r.parallel_tool_calls is False
    events = list(client.responses.create(**args, stream=True))
    for e in events:
        EVENT.validate_python(e.to_dict())
    items = reassemble(events)
    assert same_calls(items, r.output) and items == [o.to_dict() for o in events[-1].response.output]
    assert [e.type for e in events if e.type.startswith("response.function_call_arguments")][-1].endswith(".done")
    # How many deltas is timing: chunks that queue while the server writes arrive joined (EngineHandle), so a busy
    # machine may send a whole call in one. That arguments stream in pieces is test_response_events' to check.
    with client.responses.stream(**args) as stream:  # the client's own accumulator agrees
        final = stream.get_final_response()
    assert same_calls([o.to_dict() for o in final.output], r.output)


def test_parallel_calls_are_items_one_after_another(client):
    for seed in range(8):  # a random model: some seeds make one call, some run past the limit mid-call
        args = dict(model="tiny", input=ASK, tools=FLAT, tool_choice="required", temperature=1.0,
                    max_output_tokens=400, extra_body={"seed": seed})
        r = client.responses.create(**args)
        if len(r.output) > 1 and r.status == "completed":
            break
    else:
        pytest.fail("no seed gave two whole calls")
    calls = check_calls(r.output, SCHEMAS)
    assert len(calls) == len(r.output) and len({c.call_id for c in calls}) == len(calls)
    assert same_calls(reassemble(list(client.responses.create(**args, stream=True))), r.output)


def test_tool_choice_none_is_a_message_and_auto_never_fails(client):
    none = client.responses.create(model="tiny", input=ASK, tools=FLAT, tool_choice="none", temperature=1.0,
                                   max_output_tokens=30, extra_body={"seed": 1})
    assert [o.type for o in none.output] == ["message"] and none.output_text and none.tool_choice == "none"
    for seed in range(3):
        auto = client.responses.create(model="tiny", input=ASK, tools=FLAT, temperature=1.0, max_output_tokens=30,
                                       extra_body={"seed": seed})
        assert auto.status in ("completed", "incomplete") and auto.output and auto.tool_choice == "auto"
        assert all(o.type in ("message", "function_call") for o in auto.output)


def reused_total(server: str) -> float:
    text = httpx.get(f"{server}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    return float(re.search(r"^llm_prompt_tokens_reused_total (\S+)$", text, re.M).group(1))


def test_a_function_call_output_continues_the_stored_call(client, server, folder):
    weather = [FLAT[0]]
    first = client.responses.create(model="tiny", input=ASK, tools=weather, tool_choice="required",
                                    parallel_tool_calls=False, temperature=0, max_output_tokens=160)  # a whole call: ~90 tokens
    (call,) = check_calls(first.output, {"get_weather"})
    result = json.dumps({"temperature_c": 21})
    before = reused_total(server)
    # tools offered as before (tool_choice "none" would take them out of the prompt, which then differs early)
    second = client.responses.create(model="tiny", previous_response_id=first.id, tools=weather,
                                     input=[{"type": "function_call_output", "call_id": call.call_id,
                                             "output": result}], temperature=0, max_output_tokens=20)
    reused = reused_total(server) - before
    assert second.status in ("completed", "incomplete") and second.previous_response_id == first.id
    assert second.output and all(o.type in ("message", "function_call") for o in second.output)
    # the prompt is the conversation with the stored call and its result, as Qwen2.5's template renders them
    llm = LLM(folder)
    history = ASK + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": call.call_id, "type": "function", "function": {"name": "get_weather", "arguments": call.arguments}}]},
        {"role": "tool", "tool_call_id": call.call_id, "content": result}]
    tools = ToolRequest.of(llm.template, [{"type": "function", "function": TOOLS[0]["function"]}], "auto")
    prompt = llm.encode(tools.prompt(llm.template, normalize_messages(history)), special=False)
    assert second.usage.input_tokens == len(prompt)
    # its start is the first turn's prompt, which the engine kept: reused, and said so in the usage
    assert second.usage.input_tokens_details.cached_tokens == reused >= first.usage.input_tokens - 1 > 0
    assert client.responses.retrieve(first.id).output[0].call_id == call.call_id


def test_a_call_cut_by_max_output_tokens_is_incomplete_and_the_conversation_goes_on(client):
    args = dict(model="tiny", input=ASK, tools=FLAT, tool_choice={"type": "function", "name": "get_weather"},
                temperature=0)
    whole = client.responses.create(**args, max_output_tokens=120)
    cut = client.responses.create(**args, max_output_tokens=whole.usage.output_tokens - 4)  # inside the arguments
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    assert [(o.type, o.status) for o in cut.output] == [("function_call", "incomplete")]
    assert whole.output[0].arguments.startswith(cut.output[0].arguments) and whole.output[0].status == "completed"
    goes_on = client.responses.create(model="tiny", input="Try again.", previous_response_id=cut.id, tools=FLAT,
                                      tool_choice="none", temperature=0, max_output_tokens=4)
    assert goes_on.output_text and goes_on.previous_response_id == cut.id


@pytest.fixture(scope="module")
def smol(smollm_build):
    """The base URL of a server of the default model (a template without tools: the generic JSON format)."""
    with serving(smollm_build("int4"), "--api-key", KEY, "--served-model-name", "smol") as base:
        yield base


def test_an_agents_sdk_agent_runs_its_tool_to_a_final_output(smol):
    """OpenAI's Agents SDK (`openai-agents`, its OpenAIResponsesModel on our base_url): the model must call the tool
    (tool_choice required), the SDK runs it and sends the result back as a function_call_output item with the whole
    history, and the model's next reply is the final output. The 135M default model repeats its call whenever it
    may (tried: four turns of the same call under "auto"), so a hook turns tool_choice to "none" once the tool ran;
    a tiny random model would not end its free reply before max_output_tokens, which the SDK treats as a failure."""
    from agents import (
        Agent,
        AgentHooks,
        ModelSettings,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)  # traces would go to OpenAI
    seen = []

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        seen.append(city)
        return f"21 C and sunny in {city}"

    class AnswerAfterTheTool(AgentHooks):
        async def on_tool_end(self, context, agent, tool, result):
            agent.model_settings = dataclasses.replace(agent.model_settings, tool_choice="none")

    client = openai.AsyncOpenAI(base_url=smol + "/v1", api_key=KEY, max_retries=0)
    agent = Agent(name="weather", instructions="Answer with the weather.", tools=[get_weather],
                  model=OpenAIResponsesModel("smol", client), hooks=AnswerAfterTheTool(), reset_tool_choice=False,
                  model_settings=ModelSettings(tool_choice="required", parallel_tool_calls=False, temperature=0,
                                               max_tokens=200))
    result = Runner.run_sync(agent, "What is the weather in Paris?", max_turns=3)
    assert [i.type for i in result.new_items] == ["tool_call_item", "tool_call_output_item", "message_output_item"]
    call, output, message = result.new_items
    assert call.raw_item.name == "get_weather" and json.loads(call.raw_item.arguments) == {"city": seen[0]}
    assert output.output == f"21 C and sunny in {seen[0]}" and output.raw_item["call_id"] == call.raw_item.call_id
    assert isinstance(result.final_output, str) and result.final_output == message.raw_item.content[0].text != ""
    assert len(result.raw_responses) == 2


@pytest.fixture(scope="module")
def llama3(tmp_path_factory):
    """A server of a tiny random Llama speaking Llama 3.1's JSON calls, whose template takes one call a turn."""
    with serving(tool_model_folder(tmp_path_factory.mktemp("responses-llama3"), "llama3"), "--api-key", KEY,
                 "--served-model-name", "tiny") as base:
        yield base


@pytest.mark.parametrize("instructions", [None, "Be brief."])
def test_what_the_template_refuses_names_the_input_item(llama3, instructions):
    """Two calls in one assistant turn (no tools offered), which Llama 3.1's template refuses: the error names
    `input[1]`, the item the turn starts at (chat's would say messages[k], counting the instructions' system
    message)."""
    client = openai.OpenAI(base_url=llama3 + "/v1", api_key=KEY, max_retries=0)
    calls = [{"type": "function_call", "call_id": f"call_{n}", "name": "add", "arguments": "{}"} for n in (1, 2)]
    outputs = [{"type": "function_call_output", "call_id": f"call_{n}", "output": "5"} for n in (1, 2)]
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="tiny", input=ASK + calls + outputs, instructions=instructions,
                                max_output_tokens=2)
    assert e.value.body["param"] == "input"
    assert e.value.body["message"].startswith("input[1] (role assistant) cannot be expressed by this model's chat "
                                              "template: This model only supports single tool-calls at once!")
