"""Sampling as small pure functions over one logits row, composed once per request.

    logits (model) -> make_logits_processors: repetition, presence/frequency, logit_bias, min_tokens
                   -> make_sampler: argmax, or temperature -> top_k -> top_p -> min_p -> typical_p -> draw

Every function takes `logits: np.ndarray  # float32 [vocab]` and never changes it (a step that is off
returns it as is, the others a new array), so the raw row stays available for `logprobs_of`.
Reported logprobs follow vLLM's default: the model's raw distribution, before penalties, logit_bias,
temperature and filters.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from llm_runtime.errors import ParameterError

from .params import SamplingParams

LogitsProcessor = Callable[[np.ndarray, "TokenHistory"], np.ndarray]
Sampler = Callable[[np.ndarray, np.random.Generator], int]

_NEG_INF = np.float32(-np.inf)
_TINY = np.finfo(np.float32).smallest_subnormal
_BLOCK = 256  # sample_categorical picks a block of this many ids by its total, then an id inside it


class TokenHistory:
    """Token ids seen by one sequence, kept as the arrays the penalties read; `add` is amortised O(1)."""

    def __init__(self, prompt_ids: Sequence[int] | np.ndarray = ()):
        prompt = np.unique(np.asarray(prompt_ids, dtype=np.int64))
        self._in_seen = set(prompt.tolist())
        self._seen = _GrowingInts(prompt)  # unique ids of prompt + generated
        self._ids = _GrowingInts()  # unique generated ids, in order of first appearance
        self._counts = _GrowingInts()  # how often each of `_ids` was generated
        self._slot: dict[int, int] = {}  # generated id -> its index in `_ids`
        self.num_generated = 0

    def add(self, token: int) -> None:
        token = int(token)
        self.num_generated += 1
        slot = self._slot.get(token)
        if slot is not None:
            self._counts.data[slot] += 1
            return
        self._slot[token] = len(self._ids)
        self._ids.append(token)
        self._counts.append(1)
        if token not in self._in_seen:
            self._in_seen.add(token)
            self._seen.append(token)

    @property
    def seen_ids(self) -> np.ndarray:  # int64 [n]: unique ids in prompt or generated
        return self._seen.view()

    @property
    def generated_ids(self) -> np.ndarray:  # int64 [m]: unique generated ids
        return self._ids.view()

    @property
    def generated_counts(self) -> np.ndarray:  # int64 [m]: counts of `generated_ids`
        return self._counts.view()


class _GrowingInts:
    """An int64 array with amortised O(1) append."""

    def __init__(self, initial: np.ndarray | None = None):
        self.size = 0 if initial is None else len(initial)
        self.data = np.empty(max(16, 2 * self.size), np.int64)
        if self.size:
            self.data[:self.size] = initial

    def __len__(self) -> int:
        return self.size

    def append(self, value: int) -> None:
        if self.size == len(self.data):
            self.data = np.concatenate([self.data, np.empty_like(self.data)])
        self.data[self.size] = value
        self.size += 1

    def view(self) -> np.ndarray:
        return self.data[:self.size]


# Logits processors: functions of the logits and the tokens seen so far.

def apply_repetition_penalty(logits: np.ndarray, seen_ids: np.ndarray, penalty: float) -> np.ndarray:
    """transformers' rule on every id in `seen_ids` (prompt + generated): positive logits / penalty,
    negative logits * penalty. Repeated ids in `seen_ids` are harmless."""
    out = logits.astype(np.float32, copy=True)
    if len(seen_ids) == 0 or penalty == 1.0:
        return out
    picked = out[seen_ids]
    out[seen_ids] = np.where(picked > 0, picked / penalty, picked * penalty)
    return out


def apply_presence_frequency(logits: np.ndarray, ids: np.ndarray, counts: np.ndarray,
                             presence: float, frequency: float) -> np.ndarray:
    """OpenAI's rule over generated tokens: logits[j] -= counts[j] * frequency + (counts[j] > 0) * presence.
    `ids` must be unique (as `TokenHistory.generated_ids` is); `counts` lines up with it."""
    out = logits.astype(np.float32, copy=True)
    if len(ids):
        out[ids] -= counts * frequency + (counts > 0) * presence
    return out


def apply_logit_bias(logits: np.ndarray, bias: dict[int, float]) -> np.ndarray:
    """Add `bias[id]` to each listed logit; an id outside the vocabulary is a `ParameterError`."""
    ids = np.fromiter(bias.keys(), np.int64, len(bias))
    values = np.fromiter(bias.values(), np.float32, len(bias))
    return _add_bias(logits, ids, values)


def _add_bias(logits: np.ndarray, ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = logits.astype(np.float32, copy=True)
    if len(ids) and ids.max() >= len(out):
        raise ParameterError("logit_bias", f"token id {int(ids.max())} is outside the vocabulary of {len(out)}")
    out[ids] += values
    return out


def suppress_tokens(logits: np.ndarray, ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """Set the listed logits to -inf (min_tokens uses it on stop token ids)."""
    out = logits.astype(np.float32, copy=True)
    out[np.asarray(ids, dtype=np.int64)] = _NEG_INF
    return out


def make_logits_processors(params: SamplingParams, eos_ids: Iterable[int] = ()) -> LogitsProcessor:
    """Compose the processors `params` asks for into one `(logits, history) -> logits`.

    Order: repetition penalty, presence/frequency penalty (both on model logits), logit_bias (the user's
    explicit override, not scaled by penalties), then min_tokens suppression of EOS (unless ignore_eos)
    and stop_token_ids while fewer than min_tokens tokens are generated. With nothing to do it is the
    identity, so the default request pays one function call.
    """
    steps: list[LogitsProcessor] = []
    if params.repetition_penalty != 1.0:
        penalty = params.repetition_penalty
        steps.append(lambda x, h: apply_repetition_penalty(x, h.seen_ids, penalty))
    if params.presence_penalty or params.frequency_penalty:
        presence, frequency = params.presence_penalty, params.frequency_penalty
        steps.append(lambda x, h: apply_presence_frequency(x, h.generated_ids, h.generated_counts,
                                                           presence, frequency))
    if params.logit_bias:
        bias_ids = np.fromiter(params.logit_bias.keys(), np.int64, len(params.logit_bias))
        bias_values = np.fromiter(params.logit_bias.values(), np.float32, len(params.logit_bias))
        steps.append(lambda x, h: _add_bias(x, bias_ids, bias_values))
    stop_ids = set(params.stop_token_ids) | (set() if params.ignore_eos else set(eos_ids))
    if params.min_tokens and stop_ids:
        min_tokens, banned = params.min_tokens, np.array(sorted(stop_ids), np.int64)
        steps.append(lambda x, h: suppress_tokens(x, banned) if h.num_generated < min_tokens else x)

    if not steps:
        return lambda logits, history: logits

    def process(logits: np.ndarray, history: TokenHistory) -> np.ndarray:
        for step in steps:
            logits = step(logits, history)
        return logits

    return process


# Filters: functions of the logits alone. Removed tokens become -inf; the top token always survives.

def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """(logits - max) / temperature. The shift leaves the softmax unchanged and keeps tiny temperatures
    from overflowing: the top token stays at 0 and the rest go towards -inf."""
    shifted = logits.astype(np.float32, copy=True)
    shifted -= shifted.max()
    with np.errstate(over="ignore"):
        shifted /= max(np.float32(temperature), _TINY)  # a temperature below float32's range would be 0
    return shifted


def top_k_filter(logits: np.ndarray, k: int) -> np.ndarray:
    """Keep the k largest logits, and any tied with the k-th (as transformers does). k <= 0: off."""
    if k <= 0 or k >= len(logits):
        return logits
    kth = np.partition(logits, len(logits) - k)[len(logits) - k]
    return np.where(logits >= kth, logits, _NEG_INF).astype(logits.dtype, copy=False)


def top_p_filter(logits: np.ndarray, p: float) -> np.ndarray:
    """Keep the smallest set of tokens, taken in order of probability (ties: lower id first), whose
    probabilities sum to >= p. The top token is always kept. p >= 1: off.

    Only the head of the distribution is sorted: candidates grow from 32 (found by np.partition) until
    they cover p, so a peaked distribution over a large vocabulary costs O(vocab), not a full sort.
    """
    if p >= 1.0:
        return logits
    weights = _weights(logits)
    mass = p * weights.sum(dtype=np.float64)
    positive = weights > 0  # a bool mask: np.flatnonzero on it is far faster than on floats
    vocab, nonzero, m = len(weights), np.count_nonzero(positive), 32
    while True:
        if nonzero <= max(m, 2048):  # e.g. after top_k: sort them all, as np.partition is slow on tied zeros
            candidates = np.flatnonzero(positive)
        else:
            boundary = np.partition(weights, vocab - m)[vocab - m]
            candidates = np.flatnonzero(weights >= boundary)  # ascending ids: ties break towards lower ids
        order = candidates[np.argsort(-weights[candidates], kind="stable")]
        cumulative = np.cumsum(weights[order], dtype=np.float64)
        if cumulative[-1] >= mass or len(candidates) == nonzero:
            break
        m *= 4
    keep = order[:int(np.searchsorted(cumulative, mass)) + 1]  # first index where the sum reaches p
    out = np.full_like(logits, _NEG_INF)
    out[keep] = logits[keep]
    return out


def min_p_filter(logits: np.ndarray, min_p: float) -> np.ndarray:
    """Keep tokens with prob >= min_p * max prob, i.e. logit >= max logit + log(min_p). min_p <= 0: off."""
    if min_p <= 0.0:
        return logits
    threshold = logits.max() + np.log(min_p)
    return np.where(logits >= threshold, logits, _NEG_INF).astype(logits.dtype, copy=False)


def typical_p_filter(logits: np.ndarray, p: float) -> np.ndarray:
    """Locally typical sampling (Meister et al., 2022; transformers' TypicalLogitsWarper): rank tokens by how far
    their surprisal -log(prob) lies from the entropy, and keep the fewest of that ranking whose probabilities sum
    to >= p, with every token as close as the last. The most typical token always survives. p >= 1: off."""
    if p >= 1.0:
        return logits
    x = logits.astype(np.float64)
    x -= x.max()
    logp = x - np.log(np.exp(x).sum())  # float64 [vocab]; -inf where the logit is
    probs = np.exp(logp)
    with np.errstate(invalid="ignore"):
        entropy = -np.nansum(logp * probs)  # removed tokens: -inf * 0 is nan, and weighs nothing
    distance = np.abs(-logp - entropy)  # inf for removed tokens
    order = np.argsort(distance, kind="stable")
    cumulative = np.cumsum(probs[order])
    last = min(int(np.searchsorted(cumulative, p)), len(order) - 1)  # the first index whose sum reaches p
    return np.where(distance <= distance[order[last]], logits, _NEG_INF).astype(logits.dtype, copy=False)


def _weights(logits: np.ndarray) -> np.ndarray:
    """Unnormalised softmax, float32 [vocab]: exp(logits - max), so the top token weighs 1."""
    x = logits.astype(np.float32, copy=True)
    x -= x.max()
    return np.exp(x, out=x)


# Samplers.

def make_rng(seed: int | None) -> np.random.Generator:
    """A generator for one request: the same seed gives the same draws; None takes fresh entropy.
    Negative int64 seeds map one-to-one onto [2**63, 2**64). For n > 1 choices use `rng.spawn(n)`."""
    return np.random.default_rng(None if seed is None else seed % 2**64)


def greedy_sample(logits: np.ndarray, rng: np.random.Generator | None = None) -> int:
    """argmax; the first index among ties."""
    return int(np.argmax(logits))


def sample_categorical(logits: np.ndarray, rng: np.random.Generator) -> int:
    """Draw one token from softmax(logits) with one uniform number, by inverse CDF in two levels: over the
    totals of blocks of 256 ids, then inside the chosen block (a cumsum over the whole row is slow)."""
    weights = _weights(logits)
    blocks = np.concatenate([weights, np.zeros(-len(weights) % _BLOCK, np.float32)]).reshape(-1, _BLOCK)
    block_cdf = np.cumsum(blocks.sum(axis=1, dtype=np.float64))
    target = rng.random() * block_cdf[-1]
    b = _search_cdf(block_cdf, target)
    inner_cdf = np.cumsum(blocks[b], dtype=np.float64)
    return b * _BLOCK + _search_cdf(inner_cdf, target - (block_cdf[b - 1] if b else 0.0))


def _search_cdf(cdf: np.ndarray, target: float) -> int:
    """The first index whose cdf exceeds target, so zero-weight ids never win; if rounding puts target
    past the end, the last id with weight."""
    i = int(np.searchsorted(cdf, target, side="right"))
    return i if i < len(cdf) else int(np.searchsorted(cdf, cdf[-1], side="left"))


def make_sampler(params: SamplingParams) -> Sampler:
    """Compose `(logits, rng) -> token id`: argmax when greedy, otherwise temperature, then top_k,
    top_p, min_p, typical_p (transformers' warper order), then one categorical draw. Filters that are off are
    left out of the chain."""
    if params.greedy:
        return greedy_sample
    # (SamplingParams field, the value that turns it off, its step), in order
    chain = (("temperature", 1.0, apply_temperature), ("top_k", 0, top_k_filter), ("top_p", 1.0, top_p_filter),
             ("min_p", 0.0, min_p_filter), ("typical_p", 1.0, typical_p_filter))
    steps = [lambda x, step=step, value=value: step(x, value)
             for name, off, step in chain if (value := getattr(params, name)) != off]

    def sample(logits: np.ndarray, rng: np.random.Generator) -> int:
        for step in steps:
            logits = step(logits)
        return sample_categorical(logits, rng)

    return sample


# Logprobs of the raw model distribution.

def logprobs_of(logits: np.ndarray) -> np.ndarray:
    """log_softmax, float32 [vocab], stable for large logits. Pass the raw model row: reported logprobs
    are those of the model before penalties, logit_bias, temperature and filters (vLLM's default)."""
    x = logits.astype(np.float32, copy=True)
    x -= x.max()
    x -= np.float32(np.log(np.exp(x, dtype=np.float64).sum()))
    return x


def top_logprobs(logprobs_row: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k most likely (token id, logprob) pairs, most likely first; ties: lower id first."""
    k = min(k, len(logprobs_row))
    if k <= 0:
        return []
    kth = logprobs_row[np.argpartition(logprobs_row, len(logprobs_row) - k)[len(logprobs_row) - k]]
    candidates = np.flatnonzero(logprobs_row >= kth)
    order = candidates[np.argsort(-logprobs_row[candidates], kind="stable")][:k]
    return [(int(i), float(logprobs_row[i])) for i in order]
