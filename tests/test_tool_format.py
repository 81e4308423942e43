"""Tool formats: picked from the chat template's text; for "required", a named tool_choice and "auto" (always in
the generic format; "auto" but for Llama 3's) the grammar admits only calls whose arguments match the tool's schema. Random walks through the
grammar (any allowed token at each step) stand in for a model: every walk that ends parses and validates."""
from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
from tiny_models import CHATML, tiny_tokenizer
from tool_templates import LLAMA31, MISTRAL03, QWEN25

from llm_runtime.structured.constraint import GrammarCompiler
from llm_runtime.structured.grammar_state import GrammarState
from llm_runtime.structured.token_mask import MaskBatch, allowed_tokens
from llm_runtime.tools.format import GENERIC, HERMES, LLAMA3, MISTRAL, detect_format
from llm_runtime.tools.reply import parse_reply
from llm_runtime.tools.tool import parse_tools

TOOLS = parse_tools([
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 6},
                                         "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False}}},
    {"type": "function", "function": {"name": "add", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                                         "b": {"type": "integer", "minimum": 0, "maximum": 99}},
        "required": ["a", "b"], "additionalProperties": False}}},
])
SCHEMAS = {t.name: t.schema() for t in TOOLS}


@pytest.fixture(scope="module")
def tokenizer():
    tok = tiny_tokenizer(400)
    tok.add_tokens(["<tool_call>", "</tool_call>"])  # Qwen2.5's: added, not special
    tok.add_special_tokens(["[TOOL_CALLS]", "<|python_tag|>"])
    return tok


@pytest.fixture(scope="module")
def compiler(tokenizer):
    return GrammarCompiler(tokenizer.to_str(), tokenizer.get_vocab_size(), [tokenizer.token_to_id("<|im_end|>")])


def test_detect_format_from_the_template_text():
    assert detect_format(QWEN25) is HERMES
    assert detect_format(LLAMA31) is LLAMA3
    assert detect_format(MISTRAL03) is MISTRAL
    assert detect_format(CHATML) is GENERIC and detect_format(None) is GENERIC


def walk(compiler, constraint, rng, limit=400, prefix=()) -> str | None:
    """Random tokens the grammar allows after `prefix`, fast-forwarding what it forces, until it ends (None past
    `limit`)."""
    state = GrammarState(compiler.matcher(constraint), [compiler.tokenizer.eos_token])
    masks, ids = MaskBatch(compiler.vocab_size), list(prefix)
    assert all(state.consume(token) for token in prefix)
    while len(ids) < limit:
        forced = state.forced()
        if forced:
            assert state.consume_forced(forced)
            ids += forced
        if state.done:
            return compiler.tokenizer.decode_str(ids)
        allowed = np.flatnonzero(allowed_tokens(masks.fill([state])[0], compiler.vocab_size))
        token = int(rng.choice(allowed))
        if token == compiler.tokenizer.eos_token:
            return compiler.tokenizer.decode_str(ids)
        assert state.consume(token)
        ids.append(token)
    return None


@pytest.mark.parametrize("fmt", [HERMES, LLAMA3, MISTRAL, GENERIC])
@pytest.mark.parametrize("choice", ["required", "add", "auto"])
def test_enforced_calls_always_parse_and_match_the_schema(compiler, tokenizer, fmt, choice):
    constraint = fmt.constraint(TOOLS, choice, parallel=True, tokenizer=tokenizer)
    if choice == "auto" and fmt is LLAMA3:
        assert constraint is None  # its call is JSON from the first token: it cannot be told from an answer
        return
    rng, replies = np.random.default_rng(0), []
    while len(replies) < 6:
        text = walk(compiler, constraint, rng)
        if text is not None:
            replies.append(parse_reply(fmt, text, stream_arguments=True))
    for reply in replies:
        if choice == "auto" and not reply.tool_calls:
            assert isinstance(reply.content, str)
            continue
        assert reply.tool_calls and (choice == "auto" or reply.content is None), reply  # auto: text may come first
        for call in reply.tool_calls:
            assert choice in ("required", "auto") or call.name == choice
            jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])


@pytest.mark.parametrize("fmt", [HERMES, MISTRAL])
def test_auto_holds_a_call_the_reply_starts_after_its_text(compiler, tokenizer, fmt):
    """With "auto" the reply may be text, then calls: once the marker comes, the call follows the schema (a model
    asked for a non-strict tool wrote keys it made up, or ran on, before)."""
    constraint = fmt.constraint(TOOLS, "auto", parallel=True, tokenizer=tokenizer)
    prefix = tokenizer.encode("Let me see.", add_special_tokens=False).ids + [tokenizer.token_to_id(fmt.start)]
    rng, replies = np.random.default_rng(2), []
    while len(replies) < 6:
        if (text := walk(compiler, constraint, rng, prefix=prefix)) is not None:
            replies.append(parse_reply(fmt, text, stream_arguments=True))
    for reply in replies:
        assert reply.tool_calls and reply.content.strip() == "Let me see.", reply
        for call in reply.tool_calls:
            jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])


def test_parallel_calls_only_where_allowed(compiler, tokenizer):
    rng = np.random.default_rng(1)
    counts = {}
    for parallel in (True, False):
        constraint = HERMES.constraint(TOOLS, "required", parallel=parallel, tokenizer=tokenizer)
        texts = [t for t in (walk(compiler, constraint, rng) for _ in range(12)) if t is not None]
        counts[parallel] = {len(parse_reply(HERMES, t).tool_calls) for t in texts}
    assert counts[False] == {1} and max(counts[True]) > 1
    assert "<[" in HERMES.constraint(TOOLS, "required", True, tokenizer).text  # the marker as its token
    assert LLAMA3.constraint(TOOLS, "required", True, tokenizer).text.count("%json") == 1  # llama3: one call


def test_none_offers_no_constraint(tokenizer):
    for fmt in (HERMES, LLAMA3, MISTRAL, GENERIC):
        assert fmt.constraint(TOOLS, "none", True, tokenizer) is None
        assert fmt.constraint((), "auto", True, tokenizer) is None
