"""Tools, earlier calls and tool results in the prompt: by the model's own template when it supports tools,
in the generic format otherwise."""
from __future__ import annotations

import json

import pytest
from tiny_models import CHATML
from tool_templates import LLAMA31, MISTRAL03, QWEN25

from llm_runtime.chat.template import ChatTemplate
from llm_runtime.errors import ParameterError
from llm_runtime.tools.format import GENERIC, HERMES, LLAMA3, MISTRAL
from llm_runtime.tools.prompt import render_with_tools
from llm_runtime.tools.tool import parse_tools

TOOLS = parse_tools([{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
HISTORY = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_abc", "content": '{"temp": 21}'},
]


def test_hermes_template_gets_tools_and_dict_arguments():
    text = render_with_tools(ChatTemplate(QWEN25), HISTORY, TOOLS, HERMES)
    assert '<tools>\n{"type": "function", "function": {"name": "get_weather"' in text
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    assert "<|im_start|>user\n<tool_response>\n{\"temp\": 21}\n</tool_response><|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_tool_choice_none_leaves_the_tools_out():
    text = render_with_tools(ChatTemplate(QWEN25), HISTORY[:1], TOOLS, HERMES, choice="none")
    assert "<tools>" not in text and "You are Qwen" in text


def test_llama3_template_puts_tools_in_the_first_user_turn():
    text = render_with_tools(ChatTemplate(LLAMA31, bos_token="<|begin_of_text|>"), HISTORY, TOOLS, LLAMA3)
    assert "Environment: ipython" in text and '"name": "get_weather"' in text
    assert '{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>' in text
    assert '<|start_header_id|>ipython<|end_header_id|>\n\n{"temp": 21}<|eot_id|>' in text


def test_mistral_template_gets_nine_character_ids_consistently():
    text = render_with_tools(ChatTemplate(MISTRAL03, bos_token="<s>", eos_token="</s>"), HISTORY, TOOLS, MISTRAL)
    call_id = text.split('"id": "')[1][:9]
    assert call_id.isalnum() and f'"call_id": "{call_id}"' in text and "[AVAILABLE_TOOLS]" in text


def test_generic_format_describes_tools_and_renders_history_as_json():
    text = render_with_tools(ChatTemplate(CHATML), [{"role": "system", "content": "Be brief."}, *HISTORY], TOOLS,
                             GENERIC, choice="auto")
    system = text.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\nBe brief.\n\nYou can use these tools")
    assert '"name": "get_weather"' in system and '{"content": <your answer>}' in system
    assert json.dumps({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}) in text
    result = json.dumps({"tool_result": {"name": "get_weather", "content": '{"temp": 21}'}})
    assert f"<|im_start|>user\n{result}<|im_end|>" in text


def test_generic_required_and_named_say_so():
    required = render_with_tools(ChatTemplate(CHATML), HISTORY[:1], TOOLS, GENERIC, choice="required")
    named = render_with_tools(ChatTemplate(CHATML), HISTORY[:1], TOOLS, GENERIC, choice="get_weather")
    assert "Call at least one tool" in required and '{"content"' not in required
    assert "Call the tool get_weather" in named


def test_legacy_function_messages_render():
    history = [HISTORY[0], {"role": "assistant", "content": None,
                            "function_call": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
               {"role": "function", "name": "get_weather", "content": "21 C"}]
    text = render_with_tools(ChatTemplate(QWEN25), history, TOOLS, HERMES)
    assert '"arguments": {"city": "Paris"}' in text and "<tool_response>\n21 C\n</tool_response>" in text


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]", 7])
def test_bad_arguments_in_history_are_a_parameter_error(arguments):
    bad = [HISTORY[0], {"role": "assistant", "tool_calls": [
        {"id": "x", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}]}]
    with pytest.raises(ParameterError, match="arguments must be a JSON object"):
        render_with_tools(ChatTemplate(QWEN25), bad, TOOLS, HERMES)
