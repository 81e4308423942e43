"""Prompts in chunks, and the prompt tokens a finished sequence leaves in its cache slot for the next generation
(a conversation's history is not computed again), with logits bit-identical to a whole prefill."""
from pathlib import Path

import numpy as np
import onnxruntime_genai as og
from graph_driver import genai_greedy

from llm_runtime import LLM, SamplingParams
from llm_runtime.engine import EngineConfig
from llm_runtime.engine.prompt_split import prefill_chunk
from llm_runtime.graph.runner import prefill_inputs
from llm_runtime.kv_cache import KVCache

TINY_PROMPT = "The quick brown fox jumps over the lazy dog."
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY_64 = SamplingParams(temperature=0, max_tokens=64, ignore_eos=True)
PREFILL_CHUNK = EngineConfig().chunk_size


def prefill(runner, cache, prompt_ids: list[int], cached: int = 0):
    """The engine's calls for one prompt alone, past the `cached` tokens slot 0 holds: chunks cut by
    `prefill_chunk`; logits float32 [vocab] of its last token."""
    while cached < len(prompt_ids):
        n = prefill_chunk(len(prompt_ids) - cached, PREFILL_CHUNK)
        logits = runner.run(prefill_inputs(prompt_ids[cached:cached + n], cached=cached), cache)
        cached += n
    return logits[-1]


def test_long_prompt_prefilled_in_chunks_matches_one_call_and_onnxruntime_genai(smol_llm):
    """A 600-token prompt goes in as three chunks; the logits equal one whole call's and the greedy tokens equal
    onnxruntime-genai's (which prefills in one call)."""
    ids = smol_llm.encode((Path(__file__).resolve().parent.parent / "benchmarks" / "prompts" / "bench_long.txt").read_text(encoding="utf-8"))[:600]
    assert len(ids) == 600 > 2 * PREFILL_CHUNK
    c = smol_llm.folder.contract
    caches = [KVCache(c.num_layers, c.num_kv_heads, c.head_dim, np.dtype(c.kv_dtype), slots=1, capacity=768)
              for _ in range(2)]
    chunked = prefill(smol_llm.runner, caches[0], ids).copy()
    whole = smol_llm.runner.run(prefill_inputs(ids), caches[1])[-1].copy()
    np.testing.assert_array_equal(chunked, whole)  # bit-identical: what prefix reuse relies on
    for held in (300, 598):  # a cache holding the first `held` tokens (a conversation's history) computes the rest
        np.testing.assert_array_equal(prefill(smol_llm.runner, caches[0], ids, cached=held), whole)
    ours = smol_llm.generate(smol_llm.tokenizer.decode(ids),
                             SamplingParams(temperature=0, max_tokens=24, ignore_eos=True))
    assert smol_llm.encode(smol_llm.tokenizer.decode(ids)) == ids
    assert ours.token_ids == genai_greedy(og.Model(str(smol_llm.folder.path)), ids, 24, ignore_eos=True)


def watch_cached(llm: LLM, monkeypatch) -> list[int]:
    """Records how many tokens the cache held before each of the engine's graph calls (the real runner,
    watched): a generation's first entry says how much of its prompt it found there."""
    seen, run = [], llm.runner.run

    def watched(step, cache):
        seen.append(int(step.totals[0] - step.query_lens[0]))
        return run(step, cache)
    monkeypatch.setattr(llm.runner, "run", watched)
    return seen


def test_a_conversation_computes_only_its_new_turn(smol_llm, smollm_build, monkeypatch):
    greedy = SamplingParams(temperature=0, max_tokens=24)
    first = smol_llm.chat(FRANCE, greedy)
    turn = FRANCE + [{"role": "assistant", "content": first.text}, {"role": "user", "content": "And of Italy?"}]
    first_ids, ids = (smol_llm.encode(smol_llm.render_chat(m), special=False) for m in (FRANCE, turn))
    seen = watch_cached(smol_llm, monkeypatch)
    second = smol_llm.chat(turn, greedy)
    assert seen[0] == len(first_ids)  # the first turn's prompt (not the reply: one-token calls fed it)
    assert second.token_ids == LLM(smollm_build("int4")).chat(turn, greedy).token_ids  # as a fresh model
    assert second.usage.prompt_tokens == len(ids)


def test_an_abandoned_stream_leaves_its_cache_record_true(tiny_llm, tiny_build, monkeypatch):
    ids = tiny_llm.encode(TINY_PROMPT + " " + TINY_PROMPT)
    got = []
    for chunk in tiny_llm.stream_ids(ids, GREEDY_64):
        got += chunk.token_ids
        if len(got) == 4:
            break  # the generator closes after 4 tokens
    seen = watch_cached(tiny_llm, monkeypatch)
    fresh = LLM(tiny_build("llama-gqa2"))
    longer = ids + got + tiny_llm.encode(" Then the dog woke up.", special=False)
    assert [t for c in tiny_llm.stream_ids(longer, GREEDY_64) for t in c.token_ids] == \
        [t for c in fresh.stream_ids(longer, GREEDY_64) for t in c.token_ids]
    assert seen[0] == len(ids)  # the prompt, not the generated tokens
    del seen[:]
    short = tiny_llm.generate("Hi", GREEDY_64)  # shares less than MIN_SHARED tokens: computed whole
    assert seen[0] == 0 and short.token_ids == fresh.generate("Hi", GREEDY_64).token_ids
    list(tiny_llm.stream_ids(longer, GREEDY_64))
    tiny_llm.reset_prefix_cache()
    del seen[:]
    list(tiny_llm.stream_ids(longer, GREEDY_64))
    assert seen[0] == 0  # forgotten: computed whole


def test_an_unrelated_request_between_turns_leaves_the_conversation_its_slot(tiny_build):
    llm = LLM(tiny_build("llama-gqa2"), engine=EngineConfig(max_concurrency=4))
    greedy = SamplingParams(temperature=0, max_tokens=4)
    history = llm.encode(TINY_PROMPT * 3, special=False)
    first = [t for c in llm.stream_ids(history, greedy) for t in c.token_ids]
    list(llm.stream_ids(llm.encode("Something else entirely, and long enough to keep.", special=False), greedy))
    before = llm.engine.stats().reused_prompt_tokens
    chunks = list(llm.stream_ids(history + first + history[:8], greedy))  # the next turn starts with the first prompt
    reused = llm.engine.stats().reused_prompt_tokens - before
    assert reused >= len(history) and chunks[-1].usage.cached_tokens == reused  # the request's usage says it too
