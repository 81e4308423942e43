"""Allowed-token masks: the batch of a step computed together equals each row alone; the mask sets exactly the
disallowed logits to -inf; a row's grammar state consumes, forces, rolls back and ends."""
from __future__ import annotations

import json

import numpy as np
import pytest
from tiny_models import tiny_tokenizer

from llm_runtime.structured.constraint import Constraint, GrammarCompiler
from llm_runtime.structured.grammar_state import GrammarState
from llm_runtime.structured.token_mask import MaskBatch, allowed_tokens, apply_mask

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "size": {"enum": ["small", "large"]}},
          "required": ["name", "size"], "additionalProperties": False}


@pytest.fixture(scope="module")
def compiler():
    tok = tiny_tokenizer(400)
    return GrammarCompiler(tok.to_str(), tok.get_vocab_size(), [tok.token_to_id("<|im_end|>")])


def state(compiler, constraint) -> GrammarState:
    return GrammarState(compiler.matcher(constraint), [compiler.tokenizer.eos_token])


def test_batched_masks_equal_single_masks(compiler):
    constraints = [Constraint.json_schema(SCHEMA), Constraint("regex", "[0-9]+"), Constraint.json_object(),
                   Constraint("grammar", 'start: "yes" | "no"')] * 5
    states = [state(compiler, c) for c in constraints]
    states[0].consume_forced(states[0].forced())  # rows at different points of their grammars
    batch = MaskBatch(compiler.vocab_size)
    bits = batch.fill(states)
    assert bits.shape == (20, (compiler.vocab_size + 31) // 32)
    for row, s in zip(bits, states):
        alone = np.frombuffer(s.matcher.deep_copy().compute_bitmask(), np.int32)
        assert np.array_equal(row, alone)
    assert batch.rows == 20 and batch.seconds > 0
    assert np.array_equal(batch.fill(states[1:2])[0], bits[1])  # one row takes the single-matcher path


def test_apply_mask_keeps_exactly_the_allowed_logits(compiler):
    s = state(compiler, Constraint("regex", "[0-9]+"))
    bits = MaskBatch(compiler.vocab_size).fill([s])[0]
    allowed = allowed_tokens(bits, compiler.vocab_size)
    digits = {i for i in range(compiler.vocab_size) if compiler.tokenizer.decode_str([i]).isdigit()}
    assert set(np.flatnonzero(allowed)) == digits
    logits = np.random.default_rng(0).standard_normal(compiler.vocab_size).astype(np.float32)
    masked = apply_mask(logits, bits)
    assert masked.dtype == np.float32 and np.array_equal(masked[allowed], logits[allowed])
    assert np.all(np.isneginf(masked[~allowed])) and not np.isneginf(logits).any()


def test_state_consumes_forces_rolls_back_and_ends(compiler):
    s = state(compiler, Constraint.json_schema(SCHEMA))
    forced = s.forced()
    assert compiler.tokenizer.decode_str(forced) == '{"name": "'  # the fixed key, fast-forwarded
    ids = compiler.tokenizer.tokenize_str(json.dumps({"name": "ab", "size": "small"}))
    for t in ids[:-1]:
        assert s.consume(t)
    before = s.matcher.compute_bitmask()
    assert s.consume(ids[-1]) and s.done and s.accepting
    assert s.consume(compiler.tokenizer.eos_token)  # the end of the reply
    assert s.rollback(1) and not s.done and s.matcher.compute_bitmask() == before
    assert s.consumed == len(ids) - 1


def test_a_disallowed_token_puts_the_state_in_error(compiler):
    s = state(compiler, Constraint("regex", "[0-9]+"))
    letter = compiler.tokenizer.tokenize_str("x")[0]
    assert not s.consume(letter) and s.error
