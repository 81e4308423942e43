"""Streamed tool-call deltas, shaped as OpenAI sends them, reassemble to the non-streamed message."""
from __future__ import annotations

import json

import pytest
from test_tool_parser import GENERIC_TWO, HERMES_TWO, MISTRAL_TWO
from tool_templates import MISTRAL03, QWEN25

from llm_runtime.chat.template import ChatTemplate
from llm_runtime.tools.deltas import ToolDeltas, fold_deltas
from llm_runtime.tools.request import ToolRequest

TOOLS = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in ("get_weather",
                                                                                                    "get_time")]


@pytest.mark.parametrize("template, choice, text", [
    (QWEN25, "auto", HERMES_TWO), (QWEN25, "required", HERMES_TWO), (MISTRAL03, "auto", MISTRAL_TWO),
    ("{{ messages }}", "auto", GENERIC_TWO)])
def test_deltas_fold_to_the_whole_reply(template, choice, text):
    request = ToolRequest.of(ChatTemplate(template), TOOLS, choice)
    whole = ToolDeltas(request).add(text, last=True)
    streamed = ToolDeltas(request)
    pieces = [d for i in range(0, len(text), 3) for d in streamed.add(text[i:i + 3])] + streamed.add("", last=True)
    a, b = fold_deltas(whole), fold_deltas(pieces)
    for message in (a, b):
        for call in message["tool_calls"]:
            call.pop("id")
    assert a == b and [c["function"]["name"] for c in a["tool_calls"]] == ["get_weather", "get_time"]
    assert all(json.loads(c["function"]["arguments"]) for c in b["tool_calls"])
    assert streamed.finish_reason("stop") == "tool_calls" and streamed.finish_reason("length") == "length"


def test_each_call_names_itself_once_then_streams_arguments():
    request = ToolRequest.of(ChatTemplate(QWEN25), TOOLS, "required")  # enforced: arguments stream as they come
    stream = ToolDeltas(request)
    deltas = [d for ch in HERMES_TWO for d in stream.add(ch)] + stream.add("", last=True)
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    heads = [c for c in calls if "id" in c]
    assert [(c["index"], c["type"], c["function"]["name"]) for c in heads] == [(0, "function", "get_weather"),
                                                                             (1, "function", "get_time")]
    assert all(set(c) == {"index", "function"} and set(c["function"]) == {"arguments"} for c in calls if "id" not in c)
    assert len(calls) > 10 and not any("<tool_call>" in (d.get("content") or "") for d in deltas)
    assert fold_deltas(deltas)["content"] == "Let me look that up.\n"


def test_a_plain_answer_has_no_tool_calls():
    stream = ToolDeltas(ToolRequest.of(ChatTemplate(QWEN25), TOOLS))
    message = fold_deltas(stream.add("Paris.") + stream.add("", last=True))
    assert message == {"content": "Paris."} and stream.finish_reason("stop") == "stop"


def test_tool_choice_none_leaves_call_shaped_text_as_content():
    request = ToolRequest.of(ChatTemplate(QWEN25), TOOLS, "none")
    stream = ToolDeltas(request)
    message = fold_deltas([d for i in range(0, len(HERMES_TWO), 5) for d in stream.add(HERMES_TWO[i:i + 5])])
    assert message == {"content": HERMES_TWO} and stream.finish_reason("stop") == "stop"
