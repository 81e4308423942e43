"""The acceptance rule on a fixed tiny vocabulary: greedy agreement, and the speculative-sampling distribution."""
import numpy as np
import pytest
import torch

from llm_runtime.sampling.params import SamplingParams
from llm_runtime.sampling.request_sampler import RequestSampler
from llm_runtime.sampling.samplers import apply_temperature, top_k_filter
from llm_runtime.speculation import verify_run

V = 6
ROWS = np.array([[2.0, 1.0, 0.5, 0.0, -1.0, 1.5],  # float32 [3, V]: the model's rows after the sequence + d[:i]
                 [0.0, 2.5, 0.3, 1.0, 0.2, -0.5],
                 [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]], np.float32)
DRAFT = [0, 1]


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def chi2_pvalue(counts: np.ndarray, probs: np.ndarray) -> float:
    """Pearson's chi-squared goodness of fit over the bins with probability > 0."""
    keep = probs > 0
    expected = probs[keep] * counts.sum()
    stat = float(((counts[keep] - expected) ** 2 / expected).sum())
    df = int(keep.sum()) - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), torch.tensor(stat / 2, dtype=torch.float64)))


def argmax_pick(row):
    return int(np.argmax(row)), None


def test_greedy_accepts_while_the_draft_is_the_argmax():
    rows = np.eye(8, dtype=np.float32)[[3, 1, 4, 1, 5]]  # argmax per row: 3 1 4 1 5
    assert [t for t, _ in verify_run([3, 1, 4, 1], rows, argmax_pick)] == [3, 1, 4, 1, 5]  # all and the bonus
    for i in range(4):  # a rejection at every position: the argmax there ends the run
        draft = [3, 1, 4, 1]
        draft[i] = 7
        assert [t for t, _ in verify_run(draft, rows, argmax_pick)] == [3, 1, 4, 1, 5][:i + 1]
    assert [t for t, _ in verify_run([], rows, argmax_pick)] == [3]  # no draft: a plain decode


def sampler(params: SamplingParams, seed: int) -> RequestSampler:
    return RequestSampler(SamplingParams(**{**params.__dict__, "seed": seed}), [5, 5], eos_ids=[])


@pytest.mark.parametrize("params", [SamplingParams(temperature=1.0), SamplingParams(temperature=0.7, top_k=4)],
                         ids=["plain", "temperature-top_k"])
def test_speculative_sampling_keeps_the_distribution(params):
    """20,000 seeded runs of 2 drafts: the first emitted token follows p0, d0 is accepted with probability p0(d0)
    and a rejection is distributed as p0 without d0; after an accepted d0 the next follows p1, and so on."""
    filtered = [softmax(top_k_filter(apply_temperature(r, params.temperature), params.top_k)) for r in ROWS]
    first, second, third = np.zeros(V), np.zeros(V), np.zeros(V)
    lengths = np.zeros(4)
    n = 20_000
    for seed in range(n):
        run = [t for t, _ in verify_run(DRAFT, ROWS, sampler(params, seed).pick)]
        lengths[len(run)] += 1
        first[run[0]] += 1
        if len(run) > 1:
            second[run[1]] += 1
        if len(run) > 2:
            third[run[2]] += 1
    p0, p1, p2 = filtered
    assert chi2_pvalue(first, p0) > 1e-3
    assert chi2_pvalue(second, p1) > 1e-3
    assert chi2_pvalue(third, p2) > 1e-3
    rejected = np.where(np.arange(V) == DRAFT[0], 0.0, p0) / (1 - p0[DRAFT[0]])
    assert chi2_pvalue(np.where(np.arange(V) == DRAFT[0], 0, first), rejected) > 1e-3
    # emitted lengths: 1 (d0 rejected), 2 (d0 taken, d1 rejected), 3 (both taken, plus the bonus)
    a0, a1 = p0[DRAFT[0]], p1[DRAFT[1]]
    assert chi2_pvalue(lengths[1:], np.array([1 - a0, a0 * (1 - a1), a0 * a1])) > 1e-3


def test_seeded_speculation_emits_what_plain_decoding_would():
    """Same seed, same rows: the run equals picking row by row without drafts, penalties on the history included
    (row i is processed with d[:i] in the history)."""
    params = SamplingParams(temperature=0.9, repetition_penalty=1.3, presence_penalty=0.5)
    for seed in range(200):
        plain = sampler(params, seed)
        expected = []
        for row in ROWS:
            expected.append(plain.pick(row)[0])
            if len(expected) <= len(DRAFT) and expected[-1] != DRAFT[len(expected) - 1]:
                break
        assert [t for t, _ in verify_run(DRAFT, ROWS, sampler(params, seed).pick)] == expected


def test_logprobs_come_with_every_emitted_token():
    s = RequestSampler(SamplingParams(temperature=0, logprobs=True, top_logprobs=2), [1], eos_ids=[])
    run = verify_run([0, 1], ROWS, s.pick)
    assert [t for t, _ in run] == [0, 1, 0]
    for (token, lp), row in zip(run, ROWS):
        assert lp.token_id == token
        assert lp.logprob == pytest.approx(float(np.log(softmax(row)[token])), abs=1e-5)
        assert len(lp.top) == 2
