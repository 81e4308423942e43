"""Speculation inside the engine step: which decoding rows draft, and what a verified run accepts.

A decoding row that drafts feeds its last token plus k drafts as one chunk of k + 1 tokens and gets k + 1 rows of
logits (`Scheduled.draft`). After the call, the walk of `acceptance.verify_run` picks at each position with the
request's own sampling chain; the row keeps the accepted drafts' keys and values and rewinds the rest by its cache
length: GroupQueryAttention reads a row only up to its length, so nothing is copied or cleared.

Three draft sources: prompt lookup (`--speculation ngram`), the suffix cache (`--speculation suffix`: recent
requests' outputs, beside prompt lookup) and a request's predicted output (`prediction`, whether or not the engine
speculates). A row with a prediction drafts from it first, up to PREDICTION_MAX_K tokens a call (its policy
chooses k from its acceptance, so a prediction that keeps matching drafts long runs), and falls back on the others,
capped at `num_speculative_tokens`, where the prediction has no guess; between prompt lookup and the suffix cache,
the longer match drafts (the suffix cache on a tie: its continuation is the most frequent one). The suffix cache
gives each draft token a probability from its counts, and verifies the prefix whose expected tokens per unit of
cost is best (`policy.best_prefix`, up to `num_speculative_tokens`): frequent text drafts far, text seen once
little, whatever k the row's acceptance history asks for (which still starts and ends its cooldowns). A row whose drafts
failed (a preamble before the copy, an edited span) cools down; when its output has followed the prediction for
RESUME_STREAK tokens on its own, the cooldown ends and those tokens count as accepted drafts in its estimate.

A constrained row (structured output, tools held to their schemas) drafts too: its draft is cut where the grammar
stops allowing it or would force tokens (`GrammarState.draftable`: forced tokens are fed without sampling, as
without drafts), and its verified run picks each position under the mask of the grammar's state after the drafts
accepted before it, consuming each accepted draft (the engine's `_verify`).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from llm_runtime.kv_cache import KVCache
from llm_runtime.speculation import SpeculationConfig, verify_run
from llm_runtime.speculation.policy import DraftPolicy, best_prefix, drafts_pay
from llm_runtime.speculation.prediction import PredictionLookup
from llm_runtime.speculation.suffix_lookup import SuffixLookup

from .scheduler import Scheduled
from .sequence import Sequence

PREDICTION_MAX_K = 32  # drafts per call from a prediction; the policy's cost model picks fewer unless they pay
RESUME_STREAK = 4  # output tokens in a row that follow the prediction end a row's cooldown
SOURCES = ("prediction", "ngram", "suffix")


class Speculator:
    """The engine's speculation: per-sequence proposer and policy, drafting within the step's token budget,
    acceptance and rewinding, and the counters /metrics reports."""

    def __init__(self, config: SpeculationConfig | None, cache: KVCache):
        self.config, self.cache = config, cache  # config None: only predictions draft
        self.suffix = None if config is None or cache.window_rows else config.suffix_store()
        self.drafted = self.accepted = self.verifications = 0
        self.by_source = {source: [0, 0] for source in SOURCES}  # source -> [drafted, accepted]

    def attach(self, seq: Sequence, prediction: list[int] | None = None, key: str = "") -> None:
        """A new sequence gets a proposer fed with its prompt (when the engine speculates), a suffix-cache lookup
        (method "suffix"; `key`: the API key's id, for the "key" mode), a prediction proposer (when the request
        brings one, as token ids) and its own draft policy. Not with sliding-window layers: their window-sized
        caches drop the oldest rows to make room, and a rewind cannot bring them back."""
        if self.cache.window_rows or (self.config is None and not prediction):
            return
        if self.config is not None:
            seq.proposer = self.config.proposer(seq.prompt_ids)
        if self.suffix is not None:
            seq.suffix = SuffixLookup(self.suffix, seq.prompt_ids, key)
        if prediction:
            seq.prediction = PredictionLookup(prediction)
            seq.policy = DraftPolicy(max_k=PREDICTION_MAX_K, accepted=4.0, tried=5.0)  # a prior that trusts it
        else:
            seq.policy = self.config.policy()

    def extend(self, seq: Sequence, emitted: list[int]) -> None:
        """Feed a row's draft sources the tokens it emitted."""
        for source in (seq.proposer, seq.suffix, seq.prediction):
            if source is not None:
                source.extend(emitted)

    def finish(self, seq: Sequence) -> None:
        """A row that ended with a reply (finished or cancelled) adds it to the shared suffix cache."""
        if seq.suffix is not None and seq.suffix.own is None and len(seq.suffix.tokens) > seq.suffix.lead_in:
            self.suffix.add(seq.suffix.partition, seq.suffix.stored())

    def _guess(self, seq: Sequence, k: int, room: int, batch: int) -> tuple[list[int], str, float]:
        """Up to k drafts (the suffix cache: up to `room`), their source and the tokens their verification is
        expected to emit."""
        if seq.prediction is not None:
            guess = seq.prediction.propose(k)
            if guess:
                return guess, "prediction", seq.policy.expected(len(guess))
        if seq.proposer is None:
            return [], "", 0.0
        cap = self.config.num_speculative_tokens
        if seq.suffix is None:
            guess = seq.proposer.propose(min(k, cap))
            return guess, "ngram", seq.policy.expected(len(guess))
        (ngram, n), (suffix, m, probs) = seq.proposer.lookup(min(k, cap)), seq.suffix.lookup(min(room, cap))
        j = best_prefix(probs, batch)
        if j and m >= n:
            return suffix[:j], "suffix", 1.0 + sum(probs[:j])
        return ngram, "ngram", seq.policy.expected(len(ngram))

    def draft(self, plan: list[Scheduled], budget: int) -> list[Scheduled]:
        """The plan with drafts added to its one-token decodes, at most `budget` draft tokens in all. Each row's
        policy sets its k from its acceptance history and the number of decoding rows; the proposer may guess fewer;
        and the drafts must pay for the call they need (`drafts_pay`), else the step decodes without them."""
        decodes = [item for item in plan if item.decode]
        drafted: dict[int, Scheduled] = {}  # id(plan item) -> the item with its drafts
        expected = 0.0
        for item in decodes:
            seq = item.seq
            if budget <= 0 or seq.policy is None or item.rides:
                continue
            if seq.prediction is not None and seq.policy.cooldown and seq.prediction.streak >= RESUME_STREAK:
                seq.policy.resume(seq.prediction.take_streak())
            remaining = seq.params.max_tokens - seq.out.generated
            room = min(remaining - 1, budget)  # the bonus token is the last one
            k = min(seq.policy.k(len(decodes), remaining), budget)
            guess, source, gain = self._guess(seq, k, room, len(decodes)) if k > 0 else ([], "", 0.0)
            if guess and seq.grammar is not None:
                n = seq.grammar.draftable(guess)
                guess, gain = guess[:n], gain if n == len(guess) else seq.policy.expected(n)
            if guess:
                drafted[id(item)] = Scheduled(seq, item.tokens + guess, tuple(guess), source=source)
                expected += gain
                budget -= len(guess)
        if not drafted:
            return plan
        plain = [item for item in decodes if id(item) not in drafted]
        width = 1 + max(len(d.draft) for d in drafted.values())
        if not drafts_pay(len(drafted), expected, width, _span(list(drafted.values())), len(plain), _span(plain),
                          _span(decodes)):
            return plan
        return [drafted.get(id(item), item) for item in plan]

    def accept(self, item: Scheduled, rows: np.ndarray, pick: Callable[[np.ndarray], tuple]) -> list[tuple]:
        """Walk a verified run (rows float32 [k + 1, vocab]); the row keeps its last token and the accepted drafts
        in its cache, the rejected positions are rewound. Returns the (token, logprob) picks to emit."""
        seq = item.seq
        run = verify_run(item.draft, rows, pick)
        accepted = len(run) - 1
        seq.policy.update(len(item.draft), accepted)
        self.drafted += len(item.draft)
        self.accepted += accepted
        self.verifications += 1
        counts = self.by_source[item.source]
        counts[0], counts[1] = counts[0] + len(item.draft), counts[1] + accepted
        if item.source == "prediction":  # usage's accepted_prediction_tokens and rejected_prediction_tokens
            seq.prediction_accepted += accepted
            seq.prediction_rejected += len(item.draft) - accepted
        seq.cached += 1 + accepted
        self.cache.lengths[seq.slot] = seq.cached
        return run


def _span(items: list[Scheduled]) -> int:
    """Cache slots a call over these items spans (idle ones between them included)."""
    slots = [item.seq.slot for item in items]
    return max(slots) - min(slots) + 1 if slots else 0
