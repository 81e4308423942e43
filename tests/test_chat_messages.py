"""Agent histories: OpenAI chat messages (tool calls, tool results, names, text parts) become template messages
that a tools-capable template (Qwen2.5's, as text) renders as transformers renders them; a template that cannot
express a message is a clear error naming it."""
from pathlib import Path

import pytest

from llm_runtime.chat.messages import normalize_messages
from llm_runtime.chat.template import ChatTemplate
from llm_runtime.errors import ParameterError

QWEN25 = (Path(__file__).parent / "fixtures" / "templates" / "qwen2.5-instruct.jinja").read_text()
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
AGENT = [
    {"role": "developer", "content": "You answer with tools."},
    {"role": "user", "content": [{"type": "text", "text": "Weather in Paris"}, {"type": "text", "text": "and Rome?"}],
     "name": "ann"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
    {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21 C"}]},
    {"role": "assistant", "content": "Paris 18 C, Rome 21 C.", "refusal": None, "unknown_key": 1},
    {"role": "user", "content": "Thanks"},
]


def hf_render(messages, tools=None) -> str:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")),
                                  chat_template=QWEN25)
    return tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)


def test_normalized_agent_history():
    out = normalize_messages(AGENT)
    assert out[0] == {"role": "system", "content": "You answer with tools."}
    assert out[1] == {"role": "user", "content": "Weather in Paris\nand Rome?", "name": "ann"}
    assert out[2]["tool_calls"][1] == {"id": "call_2", "type": "function",
                                       "function": {"name": "get_weather", "arguments": {"city": "Rome"}}}
    assert "content" not in out[2]
    assert out[4] == {"role": "tool", "tool_call_id": "call_2", "content": "21 C"}
    assert out[5] == {"role": "assistant", "content": "Paris 18 C, Rome 21 C."}  # unknown keys ignored
    assert normalize_messages(out) == out  # idempotent: a door may normalize twice
    legacy = normalize_messages([{"role": "assistant", "content": None,
                                  "function_call": {"name": "f", "arguments": '{"a": 1}'}},
                                 {"role": "function", "name": "f", "content": "done"}])
    assert legacy == [{"role": "assistant", "tool_calls": [{"id": "", "type": "function", "function": {
        "name": "f", "arguments": {"a": 1}}}]}, {"role": "tool", "name": "f", "content": "done"}]


@pytest.mark.parametrize("tools", [None, [WEATHER]])
def test_qwen_template_renders_an_agent_history_as_transformers_does(tools):
    # transformers takes the template's own form: system role, joined text, arguments as a dict
    reference = [dict(m) for m in normalize_messages(AGENT)]
    ours = ChatTemplate(QWEN25).render(AGENT, tools=tools)
    assert ours == hf_render(reference, tools)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>' in ours
    assert "<tool_response>\n18 C, sunny\n</tool_response>" in ours


@pytest.mark.parametrize("message, says", [
    ({"role": "tool", "content": "x"}, "tool_call_id"),
    ({"role": "assistant", "content": None}, "content is missing"),
    ({"role": "user", "content": "x", "tool_calls": [{"function": {"name": "f"}}]}, "only assistant"),
    ({"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]}, "must be a JSON object"),
    ({"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]}, "must be a JSON object"),
    ({"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}, "function.name"),
    ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
     "messages[1].content[0]: this model is text-only; 'image_url' parts are not supported"),
    ({"role": "user", "content": ["hi", {"type": "input_audio"}]}, "messages[1].content[0]: only text parts"),
    ({"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "file"}]}, "content[1]: this model is "
                                                                                      "text-only; 'file' parts"),
    ({"role": "wizard", "content": "x"}, "role must be one of"),
    ({"role": "user", "content": "x", "name": 3}, "name must be a string"),
])
def test_bad_messages_name_the_message(message, says):
    with pytest.raises(ParameterError) as e:
        normalize_messages([{"role": "user", "content": "hi"}, message])
    assert e.value.param == "messages" and str(e.value).startswith("messages[1]") and says in str(e.value)


def test_a_template_that_cannot_express_a_message_names_it():
    plain = ChatTemplate("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
    with pytest.raises(ParameterError, match=r"^messages\[2\] has tool_calls, which this model's chat template"):
        plain.render(AGENT)
    strict = ChatTemplate("{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('no tools here') }}"
                          "{% endif %}{{ m['content'] | trim }}{% endfor %}")
    with pytest.raises(ParameterError, match=r"^messages\[1\] \(role tool\) cannot be expressed by this model's "
                                             r"chat template: no tools here$"):
        strict.render([{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "c", "content": "r"}])
