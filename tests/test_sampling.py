import dataclasses
import math

import numpy as np
import pytest

from llm_runtime.errors import ParameterError
from llm_runtime.sampling.params import SamplingParams
from llm_runtime.sampling.samplers import (
    TokenHistory,
    apply_logit_bias,
    apply_presence_frequency,
    apply_repetition_penalty,
    apply_temperature,
    greedy_sample,
    logprobs_of,
    make_logits_processors,
    make_rng,
    make_sampler,
    min_p_filter,
    sample_categorical,
    suppress_tokens,
    top_k_filter,
    top_logprobs,
    top_p_filter,
    typical_p_filter,
)

NEG = -np.inf
PROBS = np.array([0.4, 0.3, 0.2, 0.1])
LOGITS = np.log(PROBS).astype(np.float32)  # logits [4]
DRAWS = 20_000


def f32(*values):
    return np.array(values, np.float32)


def kept(logits):
    return np.flatnonzero(np.isfinite(logits)).tolist()


def frequencies(sampler, logits, seed=0, draws=DRAWS):
    rng = make_rng(seed)
    counts = np.bincount([sampler(logits, rng) for _ in range(draws)], minlength=len(logits))
    return counts / draws


def assert_matches(freq, probs, draws=DRAWS, sigmas=4.5):
    """Each frequency within `sigmas` binomial standard errors of its probability."""
    se = np.sqrt(probs * (1 - probs) / draws)
    assert np.all(np.abs(freq - probs) <= sigmas * se + 1e-12), (freq, probs)


# Filters on four-element arrays.

def test_temperature_scales_and_shifts_to_max_zero():
    np.testing.assert_allclose(apply_temperature(f32(1, 2, 3, 4), 0.5), [-6, -4, -2, 0])
    np.testing.assert_allclose(apply_temperature(f32(1, 2, 3, 4), 2.0), [-1.5, -1, -0.5, 0])


def test_tiny_temperature_does_not_overflow():
    assert apply_temperature(f32(1, 2, 3, 4), 1e-320).tolist() == [NEG, NEG, NEG, 0.0]
    for temperature in (1e-6, 1e-300, 1e-320):
        out = apply_temperature(f32(1, 2, 3, 4), temperature)
        assert not np.isnan(out).any()
        assert sample_categorical(out, make_rng(0)) == 3


def test_top_k():
    assert top_k_filter(f32(1, 4, 2, 3), 2).tolist() == [NEG, 4, NEG, 3]
    assert top_k_filter(f32(1, 4, 2, 3), 1).tolist() == [NEG, 4, NEG, NEG]
    assert top_k_filter(f32(1, 2, 2, 0), 1).tolist() == [NEG, 2, 2, NEG]  # ties with the k-th are kept
    assert top_k_filter(f32(1, 4, 2, 3), 0).tolist() == [1, 4, 2, 3]  # off
    assert top_k_filter(f32(1, 4, 2, 3), 9).tolist() == [1, 4, 2, 3]


def test_top_p():
    assert kept(top_p_filter(LOGITS, 0.6)) == [0, 1]  # 0.4 < 0.6 <= 0.7
    assert kept(top_p_filter(LOGITS, 0.8)) == [0, 1, 2]  # 0.7 < 0.8 <= 0.9
    assert kept(top_p_filter(LOGITS, 0.95)) == [0, 1, 2, 3]
    assert kept(top_p_filter(LOGITS, 0.01)) == [0]  # the top token is always kept
    assert top_p_filter(LOGITS, 1.0) is LOGITS  # off
    shuffled = LOGITS[[2, 0, 3, 1]]
    assert kept(top_p_filter(shuffled, 0.6)) == [1, 3]
    np.testing.assert_array_equal(top_p_filter(LOGITS, 0.6)[:2], LOGITS[:2])


def test_top_p_ties_break_towards_lower_ids():
    flat = f32(1, 1, 1, 1)
    assert kept(top_p_filter(flat, 0.2)) == [0]
    assert kept(top_p_filter(flat, 0.3)) == [0, 1]
    assert kept(top_p_filter(flat, 0.6)) == [0, 1, 2]


def test_top_p_on_a_large_vocabulary_matches_a_full_sort():
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal(49152) * 3).astype(np.float32)
    for p in (0.1, 0.5, 0.9, 0.999):
        probs = np.exp(logits.astype(np.float64) - logits.max())
        probs /= probs.sum()
        order = np.argsort(-probs, kind="stable")
        n = int(np.searchsorted(np.cumsum(probs[order]), p)) + 1
        assert kept(top_p_filter(logits, p)) == sorted(order[:n].tolist())


def test_top_p_after_top_k_matches_a_full_sort():
    logits = top_k_filter((np.random.default_rng(2).standard_normal(5000) * 2).astype(np.float32), 300)
    probs = np.exp(logits.astype(np.float64) - logits.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    n = int(np.searchsorted(np.cumsum(probs[order]), 0.7)) + 1
    assert kept(top_p_filter(logits, 0.7)) == sorted(order[:n].tolist())


def test_min_p():
    probs = np.array([0.5, 0.25, 0.15, 0.1])
    logits = np.log(probs).astype(np.float32)
    assert kept(min_p_filter(logits, 0.4)) == [0, 1]  # threshold 0.2
    assert kept(min_p_filter(logits, 0.25)) == [0, 1, 2]  # threshold 0.125
    assert kept(min_p_filter(logits, 1.0)) == [0]
    assert min_p_filter(logits, 0.0) is logits


def test_typical_p_keeps_the_tokens_nearest_the_entropy():
    probs = np.array([0.5, 0.2, 0.2, 0.1])  # entropy 1.221 nats; surprisals 0.69, 1.61, 1.61, 2.30
    logits = np.log(probs).astype(np.float32)
    assert kept(typical_p_filter(logits, 0.2)) == [1, 2]  # the tied pair is nearest: kept together
    assert kept(typical_p_filter(logits, 0.5)) == [0, 1, 2]  # then the most likely token, 0.54 away
    assert kept(typical_p_filter(logits, 0.95)) == [0, 1, 2, 3]
    assert typical_p_filter(logits, 1.0) is logits


def typical_rows():
    """Random logits rows [vocab] of several sizes and scales; some with ties, some after top_k (-inf)."""
    rng = np.random.default_rng(7)
    for i in range(120):
        row = (rng.standard_normal(int(rng.integers(2, 400))) * rng.uniform(0.3, 4)).astype(np.float32)
        if i % 3 == 1:
            row = np.round(row * 2) / 2  # many ties
        if i % 4 == 2 and len(row) > 5:
            row = top_k_filter(row, len(row) // 3)
        yield row


def test_typical_p_keeps_exactly_what_transformers_keeps():
    torch = pytest.importorskip("torch")
    from transformers import TypicalLogitsWarper

    for row in typical_rows():
        for p in (1e-6, 0.05, 0.3, 0.6, 0.9, 0.99):  # 1e-6: only min_tokens_to_keep (1) and its ties survive
            ref = TypicalLogitsWarper(mass=p, min_tokens_to_keep=1)(None, torch.from_numpy(row)[None])[0]
            assert kept(typical_p_filter(row, p)) == kept(ref.numpy()), (row, p)


def test_typical_p_always_keeps_a_token():
    rng = np.random.default_rng(8)
    for _ in range(50):
        row = (rng.standard_normal(1000) * 8).astype(np.float32)
        assert len(kept(typical_p_filter(row, 1e-9))) >= 1


# Logits processors.

def test_repetition_penalty_divides_positive_and_multiplies_negative():
    out = apply_repetition_penalty(f32(2, -2, 1, 0.5), np.array([0, 1, 1]), 2.0)
    assert out.tolist() == [1, -4, 1, 0.5]
    out = apply_repetition_penalty(f32(2, -2, 1, 0.5), np.array([0, 1]), 0.5)  # < 1 rewards repeats
    assert out.tolist() == [4, -1, 1, 0.5]


def test_presence_and_frequency_penalties():
    out = apply_presence_frequency(f32(1, 1, 1, 1), np.array([0, 2]), np.array([3, 1]), 0.5, 0.1)
    np.testing.assert_allclose(out, [1 - 3 * 0.1 - 0.5, 1, 1 - 0.1 - 0.5, 1], rtol=1e-6)
    out = apply_presence_frequency(f32(1, 1, 1, 1), np.array([3]), np.array([2]), -1.0, 0.0)
    assert out.tolist() == [1, 1, 1, 2]


def test_logit_bias():
    assert apply_logit_bias(f32(0, 1, 2, 3), {1: 5.0, 3: -100.0}).tolist() == [0, 6, 2, -97]
    with pytest.raises(ParameterError) as e:
        apply_logit_bias(f32(0, 1, 2, 3), {4: 1.0})
    assert e.value.param == "logit_bias"


def test_suppress_tokens():
    assert suppress_tokens(f32(0, 1, 2, 3), [1, 3]).tolist() == [0, NEG, 2, NEG]


def test_processors_do_not_change_their_input():
    logits = f32(2, -2, 1, 0.5)
    before = logits.copy()
    history = TokenHistory([0, 1])
    history.add(2)
    params = SamplingParams(repetition_penalty=1.3, presence_penalty=0.5, frequency_penalty=0.5,
                            logit_bias={3: 2.0}, min_tokens=4)
    make_logits_processors(params, eos_ids=[3])(logits, history)
    for fn in (lambda x: top_k_filter(x, 2), lambda x: top_p_filter(x, 0.5), lambda x: min_p_filter(x, 0.5),
               lambda x: apply_temperature(x, 0.7), logprobs_of):
        fn(logits)
    np.testing.assert_array_equal(logits, before)


def test_default_processors_are_the_identity():
    logits = f32(0, 1, 2, 3)
    assert make_logits_processors(SamplingParams(), eos_ids=[3])(logits, TokenHistory()) is logits


def test_min_tokens_suppresses_eos_and_stop_ids_until_reached():
    process = make_logits_processors(SamplingParams(min_tokens=2, stop_token_ids=[1]), eos_ids=[3])
    history = TokenHistory([0])
    assert process(f32(0, 1, 2, 3), history).tolist() == [0, NEG, 2, NEG]
    history.add(2)
    assert process(f32(0, 1, 2, 3), history).tolist() == [0, NEG, 2, NEG]
    history.add(2)
    assert process(f32(0, 1, 2, 3), history).tolist() == [0, 1, 2, 3]


def test_min_tokens_with_ignore_eos_leaves_eos_alone():
    process = make_logits_processors(SamplingParams(min_tokens=2, ignore_eos=True), eos_ids=[3])
    assert process(f32(0, 1, 2, 3), TokenHistory()).tolist() == [0, 1, 2, 3]


def test_repetition_covers_prompt_but_presence_only_generated():
    history = TokenHistory([0, 0, 1])
    history.add(2)
    history.add(2)
    rep = make_logits_processors(SamplingParams(repetition_penalty=2.0))
    assert rep(f32(4, 4, 4, 4), history).tolist() == [2, 2, 2, 4]
    pres = make_logits_processors(SamplingParams(presence_penalty=1.0, frequency_penalty=0.5))
    assert pres(f32(4, 4, 4, 4), history).tolist() == [4, 4, 2, 4]


def test_token_history_counts_grow_incrementally():
    history = TokenHistory(np.array([5, 5, 7]))
    tokens = [i % 40 for i in range(100)] + [3, 3]
    for t in tokens:
        history.add(t)
    assert history.num_generated == len(tokens)
    counts = dict(zip(history.generated_ids.tolist(), history.generated_counts.tolist()))
    assert counts == {t: tokens.count(t) for t in set(tokens)}
    assert sorted(history.seen_ids.tolist()) == sorted(set(tokens) | {5, 7})
    assert len(history.seen_ids) == len(set(history.seen_ids.tolist()))


# Samplers.

def test_greedy_is_argmax_first_on_ties():
    logits = f32(1, 3, 3, 2)
    rng = make_rng(0)
    for params in (SamplingParams(temperature=0), SamplingParams(top_k=1, temperature=0.7)):
        assert params.greedy
        assert make_sampler(params) is greedy_sample
        assert make_sampler(params)(logits, rng) == 1
    assert not SamplingParams().greedy


def test_temperature_one_matches_the_distribution():
    assert_matches(frequencies(make_sampler(SamplingParams()), LOGITS), PROBS)


def test_temperature_half_matches_the_sharpened_distribution():
    sharpened = PROBS ** 2 / (PROBS ** 2).sum()
    assert_matches(frequencies(make_sampler(SamplingParams(temperature=0.5)), LOGITS, seed=1), sharpened)


def test_top_p_never_emits_excluded_tokens_and_renormalises():
    freq = frequencies(make_sampler(SamplingParams(top_p=0.8)), LOGITS, seed=2)
    assert freq[3] == 0
    assert_matches(freq, np.array([0.4, 0.3, 0.2, 0.0]) / 0.9)


def test_typical_p_follows_temperature_in_the_chain():
    # at temperature 0.5 the typical half is tokens 0 and 1; before the temperature it would be tokens 1 and 2
    freq = frequencies(make_sampler(SamplingParams(temperature=0.5, typical_p=0.5)), LOGITS, seed=4)
    sharpened = np.array([0.16, 0.09, 0.0, 0.0])
    assert_matches(freq, sharpened / sharpened.sum())


def test_sampling_across_blocks_of_a_large_vocabulary():
    probs = np.zeros(600)  # three blocks of 256, the last one padded
    probs[[0, 255, 256, 511, 599]] = [0.1, 0.2, 0.3, 0.15, 0.25]
    with np.errstate(divide="ignore"):
        logits = np.log(probs).astype(np.float32)
    assert_matches(frequencies(make_sampler(SamplingParams()), logits, seed=3), probs)


def test_seeded_runs_repeat_and_seeds_differ():
    sampler = make_sampler(SamplingParams(temperature=0.9, top_k=3, min_p=0.05))
    logits = np.random.default_rng(0).standard_normal(64).astype(np.float32)

    def run(seed):
        rng = make_rng(seed)
        return [sampler(logits, rng) for _ in range(200)]

    assert run(42) == run(42)
    assert run(42) != run(43)
    assert run(-5) == run(-5) and run(-5) != run(5)


# Logprobs.

def test_logprobs_are_a_stable_log_softmax():
    out = logprobs_of(f32(1000, 1000, 1000, 1000))
    np.testing.assert_allclose(out, np.full(4, -math.log(4)), rtol=1e-6)
    np.testing.assert_allclose(logprobs_of(LOGITS), np.log(PROBS), rtol=1e-5)
    assert out.dtype == np.float32


def test_top_logprobs_sorted_with_ties_by_id():
    row = np.log(np.array([0.1, 0.3, 0.3, 0.2, 0.1]))
    assert [i for i, _ in top_logprobs(row, 3)] == [1, 2, 3]
    assert [i for i, _ in top_logprobs(row, 5)] == [1, 2, 3, 0, 4]
    assert top_logprobs(row, 1)[0] == (1, pytest.approx(math.log(0.3)))
    assert top_logprobs(row, 0) == []


# SamplingParams validation.

def test_stop_is_normalised_to_a_tuple():
    assert SamplingParams(stop="END").stop == ("END",)
    assert SamplingParams(stop=["a", "b"]).stop == ("a", "b")
    assert SamplingParams(stop_token_ids=[2, 3]).stop_token_ids == (2, 3)
    assert SamplingParams(logit_bias={"50": 1}).logit_bias == {50: 1.0}


def test_the_python_api_takes_any_number_of_stop_strings():
    codex = ["\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif"]  # HumanEval's stop list: six strings
    assert SamplingParams(stop=codex).stop == tuple(codex)
    assert len(SamplingParams(stop=[str(i) for i in range(100)]).stop) == 100
    with pytest.raises(ParameterError, match="stop strings must hold 1 to 256 characters"):
        SamplingParams(stop=["ok", "s" * 257])  # each string is still bounded


@pytest.mark.parametrize("param, value", [
    ("max_tokens", 0), ("max_tokens", 2.5), ("max_tokens", True),
    ("min_tokens", -1), ("min_tokens", 2000),
    ("temperature", -1), ("temperature", float("inf")), ("temperature", float("nan")), ("temperature", "hot"),
    ("top_k", -1), ("top_k", 1.5),
    ("top_p", 0.0), ("top_p", 1.01), ("top_p", float("nan")),
    ("min_p", -0.1), ("min_p", 1.5),
    ("typical_p", 0.0), ("typical_p", 1.01), ("typical_p", float("nan")), ("typical_p", "typical"),
    ("repetition_penalty", 0.0), ("repetition_penalty", -1.0), ("repetition_penalty", 1e-38),
    ("presence_penalty", 2.5), ("presence_penalty", -2.1),
    ("frequency_penalty", 3.0), ("frequency_penalty", -3.0),
    ("logit_bias", {1: 101}), ("logit_bias", {1: -100.5}), ("logit_bias", {-1: 1.0}), ("logit_bias", {"x": 1.0}),
    ("logit_bias", [1, 2]),
    ("seed", 1.5), ("seed", "7"), ("seed", 2**63),
    ("stop", [""]), ("stop", ""), ("stop", [1]), ("stop", 3),
    ("stop_token_ids", [-1]), ("stop_token_ids", ["a"]),
    ("ignore_eos", 1), ("logprobs", "yes"),
    ("top_logprobs", -1), ("top_logprobs", 21),
    ("n", 0), ("n", 17),
    ("json_schema", "{not json"), ("json_schema", [1]), ("regex", 5), ("grammar", b"start"),
    ("json_object", 1), ("skip_special_tokens", "no"),
])
def test_invalid_values_raise_parameter_error(param, value):
    with pytest.raises(ParameterError) as e:
        SamplingParams(**{param: value})
    assert e.value.param == param
    assert str(e.value).startswith(param + " ")
    assert isinstance(e.value, ValueError)


def test_top_logprobs_needs_logprobs():
    with pytest.raises(ParameterError) as e:
        SamplingParams(top_logprobs=5)
    assert e.value.param == "top_logprobs"
    assert SamplingParams(logprobs=True, top_logprobs=5).top_logprobs == 5


def test_error_message_format():
    with pytest.raises(ParameterError, match=r"^temperature must be >= 0, got -1$"):
        SamplingParams(temperature=-1)


def test_boundary_values_are_accepted():
    SamplingParams(max_tokens=1, min_tokens=1, temperature=0, top_p=1.0, min_p=1.0, presence_penalty=-2,
                   frequency_penalty=2, logit_bias={0: -100, 5: 100}, seed=-(2**63), top_logprobs=20,
                   logprobs=True, n=16)


def test_one_structured_output_constraint():
    assert SamplingParams().constraint is None and not SamplingParams().constrained
    p = SamplingParams(json_schema={"type": "object", "properties": {"a": {"type": "integer"}}})
    assert p.constraint.kind == "json_schema" and p.constrained
    assert dataclasses.replace(p, max_tokens=3).constraint == p.constraint
    assert SamplingParams(json_object=True).constraint.kind == "json_object"
    assert SamplingParams(regex="[a-z]+").constraint.text == "[a-z]+"
    with pytest.raises(ParameterError, match="^regex cannot be combined with json_schema"):
        SamplingParams(json_schema={}, regex="a")
    with pytest.raises(ParameterError, match="^json_object cannot be combined with grammar"):
        SamplingParams(grammar='start: "a"', json_object=True)


def test_check_vocab():
    SamplingParams(logit_bias={99: 1.0}, stop_token_ids=[99]).check_vocab(100)
    for params, name in ((SamplingParams(logit_bias={100: 1.0}), "logit_bias"),
                         (SamplingParams(stop_token_ids=[5, 100]), "stop_token_ids")):
        with pytest.raises(ParameterError) as e:
            params.check_vocab(100)
        assert e.value.param == name
