"""The suffix cache in the engine on real graphs: the same greedy tokens with the cache on as off (global and request
modes, alone and batched), the same sampling distribution, API keys kept apart in the engine and through the
server, and its /metrics lines."""
from __future__ import annotations

import re

import httpx
import numpy as np
import pytest
from test_speculator import PROMPTS, FixedK, chi2_two_sample_pvalue

from llm_runtime import LLM, SamplingParams
from llm_runtime.engine import EngineConfig
from llm_runtime.speculation import SpeculationConfig

GREEDY = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)
ENGINE = EngineConfig(max_concurrency=4, token_budget=64)


@pytest.fixture(scope="module")
def plain(tiny_build):
    return LLM(tiny_build("llama-gqa2"), engine=ENGINE)


class AlwaysDrafting(SpeculationConfig):
    """The suffix method with a policy that asks for k drafts every step."""

    def policy(self):
        return FixedK(self.num_speculative_tokens)


def suffix_llm(tiny_build, mode: str = "global", k: int = 4, engine: EngineConfig = ENGINE,
               config: type = SpeculationConfig) -> LLM:
    spec = config("suffix", num_speculative_tokens=k, suffix_cache=mode)
    return LLM(tiny_build("llama-gqa2"), engine=engine, speculation=spec)


def suffix_counts(llm: LLM) -> tuple[int, int]:
    return next((d, a) for source, d, a in llm.engine.stats().draft_sources if source == "suffix")


@pytest.mark.parametrize("mode", ["global", "request"])
def test_greedy_with_the_suffix_cache_equals_without_token_for_token(tiny_build, plain, mode):
    """Each prompt twice (the second time the global cache holds the first reply), then all at once."""
    llm = suffix_llm(tiny_build, mode)
    expected = {p: plain.submit(p, GREEDY).result().token_ids for p in PROMPTS}
    for _ in range(2):
        for p in PROMPTS:
            assert llm.submit(p, GREEDY).result().token_ids == expected[p], p
    handles = [llm.submit(p, GREEDY) for p in PROMPTS]
    assert [h.result().token_ids for h in handles] == [expected[p] for p in PROMPTS]
    drafted, accepted = suffix_counts(llm)
    assert drafted > 0 and accepted > 0  # the cache drafted, and verification took some
    stats = llm.engine.stats()
    assert (stats.suffix_cache_sequences > 0) == (mode == "global")


def test_sampled_distribution_is_unchanged_by_the_suffix_cache(tiny_build, plain):
    """600 seeded requests each, top_k = 4 of the tiny vocabulary at temperature 1, the cache first fed the greedy
    reply (then every sampled reply as it finishes): the second and third tokens' distributions against plain
    sampling, by a two-sample chi-squared test. One row at a time, each asking for 3 drafts every step."""
    llm = suffix_llm(tiny_build, k=3, engine=EngineConfig(max_concurrency=1), config=AlwaysDrafting)
    prompt, n, vocab = PROMPTS[3], 600, plain.folder.vocab_size
    for _ in range(3):
        llm.submit(prompt, SamplingParams(max_tokens=4, temperature=0, ignore_eos=True)).result()

    def tokens(model: LLM, seeds: range) -> np.ndarray:
        params = [SamplingParams(max_tokens=4, temperature=1.0, top_k=4, seed=s, ignore_eos=True) for s in seeds]
        handles = [model.submit(prompt, p) for p in params]
        return np.array([h.result().token_ids for h in handles])  # [n, 4]

    with_cache, without = tokens(llm, range(n)), tokens(plain, range(1000, 1000 + n))
    drafted, accepted = suffix_counts(llm)
    assert drafted >= n and 0 < accepted < drafted  # drafted for every request; accepted and rejected
    for position in (1, 2):
        a, b = (np.bincount(t[:, position], minlength=vocab) for t in (with_cache, without))
        assert chi2_two_sample_pvalue(a, b) > 1e-3, position


def test_key_mode_drafts_a_keys_requests_only_from_its_own_replies(tiny_build, plain):
    llm = suffix_llm(tiny_build, "key")
    prompt = PROMPTS[1]
    expected = plain.submit(prompt, GREEDY).result().token_ids
    assert llm.submit(prompt, GREEDY, key="alice").result().token_ids == expected
    before = suffix_counts(llm)[0]
    assert llm.submit(prompt, GREEDY, key="bob").result().token_ids == expected
    assert suffix_counts(llm)[0] == before  # bob's row found nothing of alice's
    assert llm.submit(prompt, GREEDY, key="alice").result().token_ids == expected
    assert suffix_counts(llm)[0] > before
    assert set(llm.engine.speculator.suffix.tries) == {"alice", "bob"}


def series(base: str, headers: dict) -> dict[str, float]:
    text = httpx.get(f"{base}/metrics", headers=headers).text
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(llm_\S+) (\S+)$", text, re.MULTILINE)}


def test_server_keys_partition_the_cache_and_metrics_report_it(tiny_build, plain):
    """Two API keys, `--suffix-cache key`: a key's second request drafts from its first reply, the other key's
    first request does not; /metrics has the cache's size and each source's drafted and accepted tokens."""
    from openai import OpenAI
    from server_process import serving

    folder = tiny_build("llama-gqa2")
    messages = [{"role": "user", "content": PROMPTS[4]}]
    expected = plain.chat(messages, GREEDY).text
    suffix = 'llm_speculative_source_draft_tokens_total{source="suffix"}'
    with serving(folder, "--speculation", "suffix", "--suffix-cache", "key", "--api-key", "key-a",
                 "--api-key", "key-b") as base:
        auth = {"Authorization": "Bearer key-a"}

        def ask(key: str) -> str:
            client = OpenAI(base_url=f"{base}/v1", api_key=key)
            reply = client.chat.completions.create(model=client.models.list().data[0].id, messages=messages,
                                                   max_tokens=24, temperature=0, extra_body={"ignore_eos": True})
            return reply.choices[0].message.content

        assert ask("key-a") == expected
        first = series(base, auth)
        assert first["llm_suffix_cache_sequences"] == 1 and first["llm_suffix_cache_bytes"] > 0
        assert ask("key-b") == expected
        assert series(base, auth)[suffix] == first[suffix]  # key-b saw nothing of key-a's reply
        assert ask("key-a") == expected
        last = series(base, auth)
        assert last[suffix] > first[suffix] and last["llm_suffix_cache_sequences"] == 3
        accepted = last['llm_speculative_source_accepted_tokens_total{source="suffix"}']
        assert 0 < accepted <= last[suffix]


@pytest.mark.parametrize("constraint", [
    {"json_schema": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                                      "n": {"type": "integer"}}, "required": ["name", "n"]}},
    {"regex": r"(ab|cd)[0-9]{3}-fixed text-[a-z]{6}"}])
def test_constrained_rows_draft_under_their_grammar_and_give_the_same_tokens(tiny_build, plain, constraint):
    """Greedy and seeded sampling, each request three times (from the second on, the cache drafts the first's
    reply): the same tokens as plain decoding, forced spans included, and drafts accepted."""
    llm = suffix_llm(tiny_build)
    for params in (SamplingParams(max_tokens=40, temperature=0, **constraint),
                   SamplingParams(max_tokens=40, temperature=0.9, seed=3, **constraint)):
        expected = plain.submit(PROMPTS[0], params).result().token_ids
        for _ in range(3):
            assert llm.submit(PROMPTS[0], params).result().token_ids == expected, params
    drafted, accepted = suffix_counts(llm)
    assert drafted > 0 and accepted > 0


def test_cli_flags_reach_the_config_and_bad_ones_are_refused(tiny_build, capsys):
    from llm_runtime.cli.main import main

    folder = str(tiny_build("llama-gqa2"))
    argv = ["generate", "--model", folder, "--max-tokens", "16", "--ignore-eos", PROMPTS[0]]
    assert main(argv) == 0
    plain_text = capsys.readouterr().out
    assert main(argv[:1] + ["--speculation", "suffix", "--suffix-cache", "request", "--suffix-cache-mb", "8"]
                + argv[1:]) == 0
    assert capsys.readouterr().out == plain_text
    with pytest.raises(SystemExit):
        main(argv[:1] + ["--speculation", "suffix", "--suffix-cache", "user"] + argv[1:])
    assert main(argv[:1] + ["--speculation", "suffix", "--suffix-cache-mb", "0"] + argv[1:]) == 2
    assert "suffix_cache_mb" in capsys.readouterr().err
