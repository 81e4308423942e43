"""A response's typed events from engine chunks, without a server: text and tool calls (the chat path's parser, on
Qwen2.5's template) become message and function_call items in order, each opened, filled and closed by OpenAI's
events; the finished response is what the last event carries, and the openai client's types accept every event."""
from __future__ import annotations

import json

from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter
from test_tool_parser import HERMES_TWO, TIME, WEATHER
from tool_templates import QWEN25

from llm_runtime.chat.template import ChatTemplate
from llm_runtime.completion import Chunk, Usage
from llm_runtime.server.response_events import ResponseEvents, new_response
from llm_runtime.tools.request import ToolRequest

TOOLS = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in ("get_weather",
                                                                                                    "get_time")]
EVENT = TypeAdapter(ResponseStreamEvent)


def run(text: str, tools: ToolRequest | None, reason: str = "stop", piece: int = 3) -> list[dict]:
    """Every event of a reply whose text arrives `piece` characters a chunk, one token each."""
    events = ResponseEvents(new_response("m", {"store": False}), prompt_tokens=7, want_logprobs=False, tools=tools)
    pieces = [text[i:i + piece] for i in range(0, len(text), piece)]
    out = events.start()
    for k, p in enumerate(pieces):
        last = k == len(pieces) - 1
        out += events.add(Chunk(p, (k,), reason if last else None, (), Usage(7, len(pieces), 5) if last else None))
    return out + events.end(reason)


def test_text_then_two_calls_are_three_items_in_order():
    events = run(HERMES_TWO, ToolRequest.of(ChatTemplate(QWEN25), TOOLS, "auto"))
    for e in events:
        EVENT.validate_python(e)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events if not e["type"].endswith(".delta")]
    assert kinds == ["response.created", "response.in_progress",
                     "response.output_item.added", "response.content_part.added", "response.output_text.done",
                     "response.content_part.done", "response.output_item.done",
                     "response.output_item.added", "response.function_call_arguments.done", "response.output_item.done",
                     "response.output_item.added", "response.function_call_arguments.done", "response.output_item.done",
                     "response.completed"]
    response = Response.model_validate(events[-1]["response"])
    message, weather, time = response.output
    assert message.content[0].text == "Let me look that up.\n"
    assert (weather.name, json.loads(weather.arguments), time.name, json.loads(time.arguments)) == \
        ("get_weather", WEATHER, "get_time", TIME)
    assert weather.call_id != time.call_id and all(o.status == "completed" for o in response.output)
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [e["output_index"] for e in added] == [0, 1, 2] and added[1]["item"]["arguments"] == ""
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(e["delta"] for e in deltas) == message.content[0].text  # no call markup in the text
    assert response.usage.input_tokens_details.cached_tokens == 5


def test_enforced_arguments_stream_in_pieces_and_a_cut_call_is_incomplete():
    required = ToolRequest.of(ChatTemplate(QWEN25), TOOLS, "required")
    whole = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>'
    events = run(whole, required)
    deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    (call,) = events[-1]["response"]["output"]
    assert len(deltas) > 3 and "".join(deltas) == call["arguments"] and json.loads(call["arguments"]) == \
        {"city": "Paris", "unit": "celsius"}
    cut = run(whole[:50], required, reason="length")
    (call,) = cut[-1]["response"]["output"]
    assert cut[-1]["type"] == "response.incomplete" and call["status"] == "incomplete"
    assert call["arguments"] == "".join(e["delta"] for e in cut if e["type"].endswith("arguments.delta"))


def test_without_tools_one_message_and_an_empty_reply_is_an_empty_message():
    events = run("Hello there", None)
    assert [o["type"] for o in events[-1]["response"]["output"]] == ["message"]
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "Hello there"
    empty = run("", None)
    assert [e["type"] for e in empty][2:] == ["response.output_item.added", "response.content_part.added",
                                               "response.output_text.done", "response.content_part.done",
                                               "response.output_item.done", "response.completed"]
