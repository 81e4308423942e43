"""Constrained decoding in the engine: the default model at temperature 1.0 always produces JSON that validates, with
constrained and free rows in one batch, forced tokens never sampled (a chunk alone, riding the decode call beside others), truncation
visible, cancellation freeing the matcher, compile errors raised at submit, and no drafts for constrained rows."""
from __future__ import annotations

import json
import re

import jsonschema
import numpy as np
import pytest

from llm_runtime import LLM
from llm_runtime.engine import EngineConfig
from llm_runtime.engine.scheduler import Scheduled
from llm_runtime.engine.sequence import Sequence
from llm_runtime.engine.step_inputs import DecodeInputs, group_calls
from llm_runtime.errors import ParameterError
from llm_runtime.kv_cache import KVCache
from llm_runtime.sampling.params import SamplingParams

PROMPT = "<|im_start|>user\nDescribe a person as JSON.<|im_end|>\n<|im_start|>assistant\n"
NAME = {"type": "string", "minLength": 1, "maxLength": 12}
SCHEMAS = {
    "nested objects": {"type": "object", "properties": {
        "person": {"type": "object", "properties": {"name": NAME, "address": {"type": "object", "properties": {
            "city": NAME, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}}, "required": ["city", "zip"],
            "additionalProperties": False}}, "required": ["name", "address"], "additionalProperties": False}},
        "required": ["person"], "additionalProperties": False},
    "arrays with min/max items": {"type": "object", "properties": {
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "minItems": 2, "maxItems": 4}},
        "required": ["tags"], "additionalProperties": False},
    "enums": {"type": "object", "properties": {"size": {"enum": ["small", "medium", "large"]},
                                               "color": {"type": "string", "enum": ["red", "green"]}},
              "required": ["size", "color"], "additionalProperties": False},
    "anyOf": {"type": "object", "properties": {"id": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 999},
                                                               {"type": "string", "pattern": "^[a-z]{3}$"}]}},
              "required": ["id"], "additionalProperties": False},
    "numbers with bounds": {"type": "object", "properties": {
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "count": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10}},
        "required": ["age", "score", "count"], "additionalProperties": False},
    "strings with pattern": {"type": "object", "properties": {
        "phone": {"type": "string", "pattern": "^\\+[0-9]{2} [0-9]{3}-[0-9]{4}$"},
        "code": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{2}$"}}, "required": ["phone", "code"],
        "additionalProperties": False},
    "$ref and $defs": {"type": "object", "$defs": {"point": {"type": "object", "properties": {
        "x": {"type": "integer", "minimum": -9, "maximum": 9}, "y": {"type": "integer", "minimum": -9, "maximum": 9}},
        "required": ["x", "y"], "additionalProperties": False}},
        "properties": {"start": {"$ref": "#/$defs/point"}, "end": {"$ref": "#/$defs/point"}},
        "required": ["start", "end"], "additionalProperties": False},
}
SAMPLES = 3


def test_schema_suite_at_temperature_one_always_validates(smol_llm):
    handles = {(name, seed): smol_llm.submit(PROMPT, SamplingParams(json_schema=schema, temperature=1.0, seed=seed,
                                                                    max_tokens=160))
               for name, schema in SCHEMAS.items() for seed in range(SAMPLES)}
    for (name, seed), handle in handles.items():
        out = handle.result()
        assert out.finish_reason == "stop", (name, seed, out.text)
        jsonschema.validate(json.loads(out.text), SCHEMAS[name])


def test_json_object_regex_and_grammar(smol_llm):
    # the small model keeps adding keys to a free object: it may run to max_tokens, but never leaves JSON
    outs = smol_llm.generate([PROMPT] * 3, SamplingParams(json_object=True, temperature=1.0, seed=3, max_tokens=48))
    for out in outs:
        assert out.text.startswith('{"'), out.text
        if out.finish_reason == "stop":
            assert isinstance(json.loads(out.text), dict)
    out = smol_llm.generate(PROMPT, SamplingParams(regex=r"[0-9]{3}-[a-z]{2,4}", temperature=1.0, seed=1))
    assert out.finish_reason == "stop" and len(out.text) in range(6, 9) and out.text[3] == "-"
    out = smol_llm.generate(PROMPT, SamplingParams(grammar='start: "yes" | "no" | "maybe"', temperature=1.0))
    assert out.text in ("yes", "no", "maybe") and out.finish_reason == "stop"


def test_unrestrictive_constraint_is_greedy_unchanged(smol_llm):
    free = smol_llm.generate(PROMPT, SamplingParams(temperature=0, max_tokens=24))
    same = smol_llm.generate(PROMPT, SamplingParams(temperature=0, max_tokens=24, regex=r"(.|\n)*"))
    assert same.token_ids == free.token_ids and same.text == free.text


def test_constrained_and_free_rows_share_batches(smollm_build):
    # fp32: batched rows equal lone ones to the bit only there (int4 kernels part on near-ties: test_engine)
    llm = LLM(smollm_build("fp32"))
    prompts = [f"<|im_start|>user\nTell me about {t}.<|im_end|>\n<|im_start|>assistant\n"
               for t in ("cats", "rain", "Paris", "music")]
    free = [llm.generate(p, SamplingParams(temperature=0, max_tokens=20)) for p in prompts]
    schema = SCHEMAS["enums"]
    handles = []
    for i, p in enumerate(prompts):  # interleaved: every step holds both kinds of rows
        handles.append(llm.submit(p, SamplingParams(temperature=0, max_tokens=20)))
        handles.append(llm.submit(p, SamplingParams(json_schema=schema, temperature=1.0, seed=i)))
    outs = [h.result() for h in handles]
    assert [o.token_ids for o in outs[0::2]] == [f.token_ids for f in free]  # masks touch only their own rows
    for out in outs[1::2]:
        jsonschema.validate(json.loads(out.text), schema)


def test_forced_tokens_skip_sampling_at_any_batch_size(smol_llm, monkeypatch):
    """Forced tokens are never sampled nor masked: alone, a row feeds them as a chunk (fewer steps than tokens);
    beside other decodes they ride the decode call one a step with no logits (fewer samplings than tokens)."""
    schema = SCHEMAS["$ref and $defs"]  # fixed keys: '{"start": {"x": ' and so on are forced
    engine = smol_llm.engine
    sampled = []
    pick = engine.next_token
    monkeypatch.setattr(engine, "next_token", lambda seq, *a: sampled.append(seq.id) or pick(seq, *a))
    for batch in (1, 4):
        steps, sampled[:] = engine.steps, []
        outs = smol_llm.generate([PROMPT] * batch, SamplingParams(json_schema=schema, temperature=1.0, seed=5))
        taken = engine.steps - steps
        tokens = [o.usage.completion_tokens for o in outs]
        assert len(sampled) < sum(tokens) * 0.8, (batch, len(sampled), tokens)  # keys and punctuation: forced
        if batch == 1:
            assert taken < tokens[0] * 0.8, (taken, tokens)  # ... and fed as chunks
        for out in outs:
            jsonschema.validate(json.loads(out.text), schema)


def test_riding_forced_tokens_compute_no_logits():
    """Beside another decode, a forced token is a one-token decode of the decode call without a logits row."""
    def item(slot, tokens, rides=False):
        seq = Sequence([1, 2, 3], SamplingParams())
        seq.slot, seq.cached = slot, 3
        return Scheduled(seq, tokens, rides=rides)

    plain, riding = item(0, [5]), item(1, [6], rides=True)
    assert riding.decode and not riding.wants_logits and riding.logit_rows == 0
    assert group_calls([plain, riding]) == [[plain, riding]]
    cache = KVCache(1, 1, 4, np.dtype("float32"), slots=2, capacity=16)
    step = DecodeInputs().build([plain, riding], cache)
    assert step.input_ids[:, 0].tolist() == [5, 6] and step.query_lens.tolist() == [1, 1]
    assert step.logits_at.tolist() == [0]  # only the plain row samples


def test_forced_tokens_report_logprob_zero_and_the_mask_shapes_logprobs(smol_llm):
    out = smol_llm.generate(PROMPT, SamplingParams(regex=r"(ab|cd)[0-9]{4}", temperature=1.0, seed=2,
                                                   logprobs=True, top_logprobs=5))
    assert out.finish_reason == "stop"
    for lp in out.logprobs:
        assert all(v == float("-inf") or t.strip() == "" or any(c in t for c in "abcd0123456789") for _, t, v in lp.top)
        assert lp.logprob > float("-inf")


def test_truncated_structure_ends_with_length(smol_llm):
    out = smol_llm.generate(PROMPT, SamplingParams(json_schema=SCHEMAS["nested objects"], max_tokens=6))
    assert out.finish_reason == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads(out.text)


def test_cancellation_frees_the_matcher(smol_llm):
    rows = smol_llm.engine.constraints
    handle = smol_llm.submit(PROMPT, SamplingParams(json_schema={"type": "array", "items": {"type": "string"}},
                                                    max_tokens=500, temperature=1.0, seed=0))
    first = next(iter(handle))
    assert first.token_ids and rows.active >= 1
    handle.cancel()
    handle.result()
    assert rows.active == 0


def test_bad_constraints_fail_at_submit_with_the_reason(smol_llm):
    with pytest.raises(ParameterError, match=r"json_schema cannot be enforced: Unimplemented keys: \[\"not\"\]"):
        smol_llm.generate(PROMPT, SamplingParams(json_schema={"not": {"type": "string"}}))
    with pytest.raises(ParameterError, match="regex cannot be enforced") as e:
        smol_llm.submit(PROMPT, SamplingParams(regex="(unclosed"))
    assert e.value.param == "regex" and smol_llm.engine.constraints.active == 0


def test_a_constraint_too_large_to_build_fails_each_time(tiny_llm):
    """`a{1000000}` compiles, then llguidance's lexer limit is met at the first token; the next request, sharing the
    compiled form, meets it at its first mask, which then allows only EOS. Each is a ParameterError (found by
    fuzzing the server: a 500, then an empty reply with finish_reason "stop" that matched nothing)."""
    for _ in range(2):
        with pytest.raises(ParameterError, match="regex cannot be enforced: lexer error") as e:
            tiny_llm.generate("x", SamplingParams(regex="a{1000000}", max_tokens=4))
        assert e.value.param == "regex"
    assert tiny_llm.engine.constraints.active == 0


def test_a_constraint_compiles_once(smol_llm):
    compiler = smol_llm.engine.constraints.compiler
    before = compiler.compiles
    params = SamplingParams(json_schema={"type": "object", "properties": {"k": {"enum": ["a", "b"]}},
                                         "required": ["k"]}, max_tokens=16)
    smol_llm.generate([PROMPT] * 3, params)
    smol_llm.generate(PROMPT, params)
    assert compiler.compiles == before + 1


def test_forced_chunks_are_kept_apart_from_decodes_and_verified_runs():
    def item(slot, tokens, draft=()):
        seq = Sequence([1, 2, 3], SamplingParams())
        seq.slot, seq.cached = slot, 3
        return Scheduled(seq, tokens, draft)

    decode, forced, verified = item(0, [5]), item(1, [5, 6, 7]), item(2, [5, 6, 7], (6, 7))
    assert decode.decode and not forced.decode and verified.decode
    assert forced.wants_logits and forced.logit_rows == 1  # one sampled position: the chunk's last
    for padded in (True, False):
        calls = group_calls([verified, forced, decode], padded=padded)
        assert calls == [[decode], [verified], [forced]]  # the one-token decode call holds only one-token decodes


def test_a_constrained_row_never_drafts_beside_drafting_rows(tiny_build):
    spec = LLM(tiny_build("llama-gqa2"), engine=EngineConfig(max_concurrency=4, token_budget=64), speculation="ngram")
    plain = LLM(tiny_build("llama-gqa2"), engine=EngineConfig(max_concurrency=4))
    greedy = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)
    repetitive = "one two three one two three one two"
    constrained = SamplingParams(regex="(one|two|three)( (one|two|three)){3,9}", temperature=0, max_tokens=40)
    alone = spec.submit(repetitive, constrained).result()
    assert spec.engine.stats().verifications == 0  # the constrained row alone: never a draft
    handles = [spec.submit(repetitive, greedy), spec.submit(repetitive, constrained)]
    free, mixed = (h.result() for h in handles)
    assert spec.engine.stats().verifications > 0  # the free row drafted beside it
    assert free.token_ids == plain.submit(repetitive, greedy).result().token_ids
    assert mixed.token_ids == alone.token_ids == plain.submit(repetitive, constrained).result().token_ids
    assert re.fullmatch("(one|two|three)( (one|two|three)){3,9}", mixed.text) and mixed.finish_reason == "stop"
