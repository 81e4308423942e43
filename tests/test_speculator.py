"""Speculation in the engine on real graphs: the same tokens as without it, every rejection position, stops inside a
verified run, cancellation, the sampling distribution, and the default model's int4 agreement."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import pytest
import torch

from llm_runtime import LLM, SamplingParams
from llm_runtime.engine import EngineConfig
from llm_runtime.engine.scheduler import Scheduled
from llm_runtime.engine.sequence import Sequence
from llm_runtime.engine.step_inputs import group_calls
from llm_runtime.speculation import SpeculationConfig

PROMPTS = ["one two three one two three one two", "The quick brown fox jumps over the lazy dog. The quick brown",
           "a b a b a b a b a b", "Once upon a time", "0123456789 0123456789 01234"]
GREEDY = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)


@dataclass
class Oracle:
    """A proposer that knows the reference continuation and spoils one draft position in turn (or none), recording
    how many drafts each verification accepted."""

    reference: list[int]  # prompt + the continuation without speculation
    held: int  # tokens the sequence holds
    spoil: list[int] = field(default_factory=lambda: [0])  # shared turn counter
    accepted: list[int] = field(default_factory=list)
    pending: list[int] | None = None
    spoil_turns: bool = True  # False: draft the reference as it is

    def extend(self, tokens) -> None:
        tokens = list(tokens)
        if self.pending is not None:
            n = 0
            while n < min(len(self.pending), len(tokens) - 1) and self.pending[n] == tokens[n]:
                n += 1
            self.accepted.append(n)
            self.pending = None
        self.held += len(tokens)

    def propose(self, k: int) -> list[int]:
        draft = self.reference[self.held:self.held + k]
        turn = self.spoil[0] % (k + 1)
        self.spoil[0] += 1
        if turn < len(draft) and self.spoil_turns:
            draft[turn] = (draft[turn] + 1) % 50
        self.pending = draft
        return draft


class FixedK:
    """A draft policy that always asks for its maximum."""

    def __init__(self, k: int):
        self.max_k = k

    def k(self, batch: int, remaining: int) -> int:
        return min(self.max_k, remaining - 1)

    def update(self, drafted: int, accepted: int) -> None:
        pass

    def expected(self, k: int) -> float:
        return k + 1.0  # every draft taken: worth a call of its own, unless beside many plain rows


class OracleConfig(SpeculationConfig):
    """Speculation whose proposer is an Oracle over the references, looked up by prompt, k drafts every step."""

    def __init__(self, references: dict[tuple, list[int]], k: int = 3, spoil: bool = True):
        super().__init__(num_speculative_tokens=k)
        object.__setattr__(self, "references", references)
        object.__setattr__(self, "spoil", spoil)
        object.__setattr__(self, "made", [])

    def proposer(self, prompt_ids):
        oracle = Oracle(self.references[tuple(prompt_ids)], len(prompt_ids), spoil_turns=self.spoil)
        self.made.append(oracle)
        return oracle

    def policy(self):
        return FixedK(self.num_speculative_tokens)


@pytest.fixture(scope="module")
def plain(tiny_build):
    return LLM(tiny_build("llama-gqa2"), engine=EngineConfig(max_concurrency=4, token_budget=64))


@pytest.fixture(scope="module")
def spec(tiny_build):
    return LLM(tiny_build("llama-gqa2"), engine=EngineConfig(max_concurrency=4, token_budget=64), speculation="ngram")


def reply(llm: LLM, prompt, params: SamplingParams = GREEDY):
    return llm.submit(prompt, params).result()


def test_prompt_lookup_greedy_equals_plain_greedy_token_for_token(plain, spec):
    for prompt in PROMPTS:
        assert reply(spec, prompt).token_ids == reply(plain, prompt).token_ids, prompt
    stats = spec.engine.stats()
    assert stats.verifications > 0 and stats.accepted_tokens > 0  # drafts were made and taken


def test_batched_with_plain_rows_and_prompt_chunks_equals_alone(plain, spec):
    prompts = PROMPTS + ["word " * 40 + "end", "x y z " * 20]  # long prompts: chunks beside verified runs
    alone = [reply(plain, p).token_ids for p in prompts]
    before = spec.engine.stats().verifications
    handles = [spec.submit(p, GREEDY) for p in prompts]
    assert [h.result().token_ids for h in handles] == alone
    assert spec.engine.stats().verifications > before


def oracle_llm(tiny_build, plain, prompts, params, k=3, spoil=True, concurrency=4):
    ids = [plain.encode(p) for p in prompts]
    refs = {tuple(i): i + reply(plain, i, params).token_ids for i in ids}
    config = OracleConfig(refs, k, spoil)
    llm = LLM(tiny_build("llama-gqa2"), engine=EngineConfig(max_concurrency=concurrency, token_budget=64),
              speculation=config)
    return llm, ids, refs, config


def test_rejections_at_every_position_give_the_same_tokens(tiny_build, plain):
    llm, ids, refs, config = oracle_llm(tiny_build, plain, PROMPTS, GREEDY, k=3)
    handles = [llm.submit(i, GREEDY) for i in ids]
    for i, h in zip(ids, handles):
        assert h.result().token_ids == refs[tuple(i)][len(i):]
    accepted = {n for o in config.made for n in o.accepted}
    assert accepted == {0, 1, 2, 3}  # a rejection at each of the 3 draft positions, and runs accepted whole
    stats = llm.engine.stats()
    assert stats.accepted_tokens == sum(sum(o.accepted) for o in config.made)


@pytest.mark.parametrize("case", ["eos", "stop_string", "max_tokens"])
def test_a_stop_inside_an_accepted_run_ends_at_the_right_token(tiny_build, plain, case):
    prompt = PROMPTS[1]
    ref = reply(plain, prompt).token_ids
    if case == "eos":
        params = SamplingParams(max_tokens=24, temperature=0, stop_token_ids=(ref[6],))
    elif case == "stop_string":
        text = plain.tokenizer.decode(ref[:8])
        params = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True, stop=[text[-3:]])
    else:
        params = SamplingParams(max_tokens=7, temperature=0, ignore_eos=True)
    expected = reply(plain, prompt, params)
    llm, ids, refs, config = oracle_llm(tiny_build, plain, [prompt], GREEDY, k=4)
    got = reply(llm, ids[0], params)
    assert (got.text, got.token_ids, got.finish_reason, replace(got.usage, cached_tokens=0)) == \
        (expected.text, expected.token_ids, expected.finish_reason, replace(expected.usage, cached_tokens=0))
    assert llm.engine.stats().running == 0


def test_streaming_sends_an_accepted_run_as_one_chunk_with_logprobs(tiny_build, plain):
    params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True, logprobs=True)
    llm, ids, refs, config = oracle_llm(tiny_build, plain, [PROMPTS[0]], params, k=4)
    chunks = list(llm.submit(ids[0], params))
    assert max(len(c.token_ids) for c in chunks) > 1
    assert all(len(c.logprobs) == len(c.token_ids) for c in chunks)
    expected = reply(plain, ids[0], params)
    assert [lp.token_id for c in chunks for lp in c.logprobs] == expected.token_ids
    got = np.array([lp.logprob for c in chunks for lp in c.logprobs])
    np.testing.assert_allclose(got, [lp.logprob for lp in expected.logprobs], atol=1e-4)
    assert chunks[-1].usage.completion_tokens == 12


def test_cancelling_mid_verification_frees_the_slot(tiny_build, plain):
    params = SamplingParams(max_tokens=200, temperature=0, ignore_eos=True)
    llm, ids, refs, config = oracle_llm(tiny_build, plain, [PROMPTS[2]], params, k=4)
    handle = llm.submit(ids[0], params)
    got = []
    for chunk in handle:
        got += chunk.token_ids
        if len(got) >= 10:
            handle.cancel()
    assert got == refs[tuple(ids[0])][len(ids[0]):][:len(got)]
    assert len(got) < 200
    for _ in range(200):  # the engine thread takes the cancellation at its next step
        if llm.engine.stats().running == 0:
            break
        time.sleep(0.01)
    assert llm.engine.stats().running == 0
    assert reply(llm, ids[0], SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)).token_ids == \
        refs[tuple(ids[0])][len(ids[0]):][:8]


def test_seeded_sampling_with_speculation_equals_without(tiny_build, plain):
    """The acceptance rule draws what plain sampling draws: same seed, same tokens (fp32 logits agree)."""
    params = SamplingParams(max_tokens=16, temperature=0.8, top_k=20, seed=7, ignore_eos=True)
    llm, ids, refs, config = oracle_llm(tiny_build, plain, PROMPTS[:3], params, k=3)
    for i in ids:
        assert reply(llm, i, params).token_ids == refs[tuple(i)][len(i):]
    assert sum(sum(o.accepted) for o in config.made) > 0


def chi2_two_sample_pvalue(a: np.ndarray, b: np.ndarray) -> float:
    """Chi-squared test that two histograms over the same bins come from one distribution."""
    keep = (a + b) > 0
    a, b = a[keep].astype(float), b[keep].astype(float)
    na, nb = a.sum(), b.sum()
    expected_a, expected_b = (a + b) * na / (na + nb), (a + b) * nb / (na + nb)
    stat = float(((a - expected_a) ** 2 / expected_a).sum() + ((b - expected_b) ** 2 / expected_b).sum())
    df = int(keep.sum()) - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64),
                                         torch.tensor(stat / 2, dtype=torch.float64)))


def test_sampled_distribution_is_unchanged_by_speculation(tiny_build, plain):
    """600 seeded requests each, top_k = 4 of the tiny vocabulary at temperature 1: the second and third tokens'
    distributions with drafts (the greedy continuation, 3 per step: accepted when the draw equals it; seeds 0..599)
    against plain sampling (seeds 1000..1599), by a two-sample chi-squared test."""
    greedy = SamplingParams(max_tokens=4, temperature=0, ignore_eos=True)
    llm, ids, refs, config = oracle_llm(tiny_build, plain, [PROMPTS[3]], greedy, k=3, spoil=False, concurrency=1)
    n, vocab = 600, plain.folder.vocab_size

    def tokens(model: LLM, seeds: range) -> np.ndarray:
        params = [SamplingParams(max_tokens=4, temperature=1.0, top_k=4, seed=s, ignore_eos=True) for s in seeds]
        handles = [model.submit(ids[0], p) for p in params]
        return np.array([h.result().token_ids for h in handles])  # [n, 4]

    with_spec, without = tokens(llm, range(n)), tokens(plain, range(1000, 1000 + n))
    stats = llm.engine.stats()
    assert stats.verifications >= n and 0 < stats.accepted_tokens < stats.draft_tokens  # accepted and rejected
    for position in (1, 2):
        a, b = (np.bincount(t[:, position], minlength=vocab) for t in (with_spec, without))
        assert chi2_two_sample_pvalue(a, b) > 1e-3, position


def test_verified_runs_get_a_call_of_their_own():
    def item(slot, tokens, draft=()):
        seq = Sequence([1, 2, 3], SamplingParams())
        seq.slot, seq.cached = slot, 3
        return Scheduled(seq, tokens, draft)

    plain_decode, verified = item(0, [5]), item(1, [5, 6, 7], (6, 7))
    assert group_calls([verified, plain_decode]) == [[plain_decode], [verified]]
    assert group_calls([verified, plain_decode], padded=False) == [[plain_decode], [verified]]


def test_bad_speculation_settings_are_refused_before_loading():
    with pytest.raises(ValueError, match="speculation"):
        LLM("/nonexistent", speculation="medusa")
    with pytest.raises(ValueError, match="num_speculative_tokens"):
        LLM("/nonexistent", speculation="ngram", num_speculative_tokens=0)


def test_cli_generate_with_speculation_prints_the_same_text(tiny_build, capsys):
    from llm_runtime.cli.main import main

    folder = str(tiny_build("llama-gqa2"))
    argv = ["generate", "--model", folder, "--max-tokens", "16", "--ignore-eos", PROMPTS[0]]
    assert main(argv) == 0
    plain_text = capsys.readouterr().out
    assert main(argv[:1] + ["--speculation", "ngram", "--num-speculative-tokens", "3"] + argv[1:]) == 0
    assert capsys.readouterr().out == plain_text
    assert main(argv[:1] + ["--speculation", "ngram", "--num-speculative-tokens", "0"] + argv[1:]) == 2
    assert "num_speculative_tokens" in capsys.readouterr().err


def test_server_with_speculation_answers_as_without_and_reports_acceptance(tiny_build, plain):
    from openai import OpenAI
    from server_process import serving
    from test_server import metric

    folder = tiny_build("llama-gqa2")
    messages = [{"role": "user", "content": PROMPTS[2]}]
    expected = plain.chat(messages, SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)).text
    with serving(folder, "--speculation", "ngram") as base:
        client = OpenAI(base_url=f"{base}/v1", api_key="none")
        model = client.models.list().data[0].id
        reply = client.chat.completions.create(model=model, messages=messages, max_tokens=24, temperature=0,
                                               extra_body={"ignore_eos": True})
        assert reply.choices[0].message.content == expected
        assert reply.usage.completion_tokens == 24
        drafted = metric(base, "llm_speculative_draft_tokens_total")
        accepted = metric(base, "llm_speculative_accepted_tokens_total")
        assert drafted > 0 and 0 <= accepted <= drafted
        assert metric(base, "llm_speculative_acceptance_rate") == pytest.approx(accepted / max(drafted, 1))


def test_sliding_window_models_decode_without_drafts(tiny_build):
    """A window-sized cache drops its oldest rows to make room for a verified run: a rewind could not restore them."""
    folder = tiny_build("mistral-window")
    prompt, params = "one two one two one two one two " * 6, SamplingParams(max_tokens=40, temperature=0, ignore_eos=True)
    spec = LLM(folder, speculation="ngram")
    assert reply(spec, prompt, params).token_ids == reply(LLM(folder), prompt, params).token_ids
    assert spec.engine.stats().verifications == 0
