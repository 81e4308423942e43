"""Tool calls through the Python API: `llm.chat(messages, params, tools=...)`. Tiny random Qwen2 and Llama models
carry tools-capable templates (Hermes, Llama 3 JSON, Mistral) and their marker tokens, so "required" and named
calls must come out right from noise; the default model (a template without tools) uses the generic format."""
from __future__ import annotations

import json

import jsonschema
import pytest
from arch_cases import BASE
from tiny_models import save_tiny_model, tiny_tokenizer
from tool_templates import LLAMA31, MISTRAL03, QWEN25
from transformers import LlamaConfig, Qwen2Config

from llm_runtime import LLM, SamplingParams
from llm_runtime.errors import ParameterError
from llm_runtime.model_builder.build import BuildOptions, build

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                      "parameters": {"type": "object", "properties": {
                                          "city": {"type": "string", "maxLength": 10},
                                          "unit": {"enum": ["celsius", "fahrenheit"]}},
                                          "required": ["city", "unit"], "additionalProperties": False}}},
    {"type": "function", "function": {"name": "add", "description": "Add two integers",
                                      "parameters": {"type": "object", "properties": {
                                          "a": {"type": "integer", "minimum": 0, "maximum": 99},
                                          "b": {"type": "integer", "minimum": 0, "maximum": 99}},
                                          "required": ["a", "b"], "additionalProperties": False}}},
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris, and what is 2 + 3?"}]
# the tiny tokenizer spends about a token per character: tool prompts need a longer context than arch_cases'
LONG = dict(BASE, max_position_embeddings=2048, num_attention_heads=4, num_key_value_heads=2)
FORMATS = {  # name -> (config, template, added tokens, added special tokens)
    "hermes": (lambda: Qwen2Config(**LONG), QWEN25, ["<tool_call>", "</tool_call>"], []),
    "llama3": (lambda: LlamaConfig(**LONG), LLAMA31, [], ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                                                          "<|python_tag|>"]),
    "mistral": (lambda: LlamaConfig(**LONG), MISTRAL03, [], ["[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]",
                                                             "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]",
                                                             "[/TOOL_RESULTS]"]),
}


def tool_model_folder(root, name: str):
    """A built tiny random model in `root` whose template and tokenizer speak the format `name`."""
    config, template, added, special = FORMATS[name]
    folder = root / "model"
    build(save_tiny_model(root / "hf", config()), folder, BuildOptions(), progress=False)
    tok = tiny_tokenizer(400)
    tok.add_tokens(added)
    tok.add_special_tokens(special)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "chat_template.jinja").write_text(template)
    return folder


@pytest.fixture(scope="module")
def tool_llm(tmp_path_factory):
    """format name -> an LLM on a tiny random model whose template and tokenizer speak that format."""
    made = {}

    def make(name: str) -> LLM:
        if name not in made:
            made[name] = LLM(tool_model_folder(tmp_path_factory.mktemp(name), name))
        return made[name]

    return make


def check_calls(reply, names):
    assert reply.finish_reason == "tool_calls" and reply.tool_calls, reply
    for call in reply.tool_calls:
        assert call.name in names and call.id
        jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_required_and_named_calls_parse_and_validate_from_a_random_model(tool_llm, fmt):
    llm = tool_llm(fmt)  # one call each: a random model would otherwise keep adding calls up to max_tokens
    for seed in range(3):
        params = SamplingParams(temperature=1.0, seed=seed, max_tokens=120)
        required = llm.chat(ASK, params, tools=TOOLS, tool_choice="required", parallel_tool_calls=False)
        named = llm.chat(ASK, params, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "add"}})
        check_calls(required, SCHEMAS)
        check_calls(named, {"add"})
        assert len(required.tool_calls) == len(named.tool_calls) == 1


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_auto_never_raises_and_none_never_calls(tool_llm, fmt):
    llm = tool_llm(fmt)
    params = SamplingParams(temperature=1.0, seed=1, max_tokens=40)
    auto = llm.chat(ASK, params, tools=TOOLS)
    assert (auto.finish_reason == "tool_calls") == bool(auto.tool_calls)
    none = llm.chat(ASK, params, tools=TOOLS, tool_choice="none")
    assert not none.tool_calls and none.finish_reason in ("stop", "length")


def test_parallel_calls_from_a_random_model(tool_llm):
    llm = tool_llm("hermes")
    counts = set()
    for seed in range(4):
        reply = llm.chat(ASK, SamplingParams(temperature=1.0, seed=seed, max_tokens=300), tools=TOOLS,
                         tool_choice="required")
        if reply.finish_reason == "tool_calls":
            check_calls(reply, SCHEMAS)
        counts.add(len(reply.tool_calls))
    assert max(counts) > 1


def test_generic_format_on_the_default_model(smol_llm):
    params = SamplingParams(temperature=1.0, seed=0, max_tokens=120)
    reply = smol_llm.chat(ASK, params, tools=TOOLS, tool_choice="required", parallel_tool_calls=False)
    check_calls(reply, SCHEMAS)
    history = ASK + [{"role": "assistant", "content": None, "tool_calls": [c.openai() for c in reply.tool_calls]}]
    history += [{"role": "tool", "tool_call_id": c.id, "content": json.dumps({"ok": True})} for c in reply.tool_calls]
    answer = smol_llm.chat(history, SamplingParams(temperature=0, max_tokens=60), tools=TOOLS)
    assert answer.finish_reason in ("stop", "tool_calls", "length")
    if answer.finish_reason == "stop":
        assert isinstance(answer.text, str) and answer.text and not answer.tool_calls


def test_tool_errors_are_parameter_errors(smol_llm):
    with pytest.raises(ParameterError, match="tool_choice names the function 'nope'"):
        smol_llm.chat(ASK, SamplingParams(), tools=TOOLS,
                      tool_choice={"type": "function", "function": {"name": "nope"}})
    with pytest.raises(ParameterError) as e:
        smol_llm.chat(ASK, SamplingParams(), tools=[{"type": "function", "function": {
            "name": "f", "parameters": {"type": "object", "properties": {"x": {"not": {"type": "string"}}}}}}],
            tool_choice="required")
    assert e.value.param == "tools" and "not" in str(e.value)
    with pytest.raises(ParameterError, match="cannot be combined"):
        smol_llm.chat(ASK, SamplingParams(json_object=True), tools=TOOLS, tool_choice="required")
