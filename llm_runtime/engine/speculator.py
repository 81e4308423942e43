"""Speculation inside the engine step: which decoding rows draft, and what a verified run accepts.

A decoding row that drafts feeds its last token plus k drafts as one chunk of k + 1 tokens and gets k + 1 rows of
logits (`Scheduled.draft`). After the call, the walk of `acceptance.verify_run` picks at each position with the
request's own sampling chain; the row keeps the accepted drafts' keys and values and rewinds the rest by its cache
length: GroupQueryAttention reads a row only up to its length, so nothing is copied or cleared.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from llm_runtime.kv_cache import KVCache
from llm_runtime.speculation import SpeculationConfig, verify_run
from llm_runtime.speculation.policy import drafts_pay

from .scheduler import Scheduled
from .sequence import Sequence


class Speculator:
    """The engine's speculation: per-sequence proposer and policy, drafting within the step's token budget,
    acceptance and rewinding, and the counters /metrics reports."""

    def __init__(self, config: SpeculationConfig, cache: KVCache):
        self.config, self.cache = config, cache
        self.drafted = self.accepted = self.verifications = 0

    def attach(self, seq: Sequence) -> None:
        """A new sequence gets a proposer fed with its prompt and its own draft policy. Not with sliding-window
        layers: their window-sized caches drop the oldest rows to make room, and a rewind cannot bring them back."""
        if self.cache.window_rows:
            return
        seq.proposer = self.config.proposer(seq.prompt_ids)
        seq.policy = self.config.policy()

    def draft(self, plan: list[Scheduled], budget: int) -> list[Scheduled]:
        """The plan with drafts added to its one-token decodes (not constrained rows), at most `budget` draft
        tokens in all. Each row's policy sets its k from its acceptance history and the number of decoding rows;
        the proposer may guess fewer; and the drafts must pay for the call they need (`drafts_pay`), else the step
        decodes without them."""
        decodes = [item for item in plan if item.decode]
        drafted: dict[int, Scheduled] = {}  # id(plan item) -> the item with its drafts
        expected = 0.0
        for item in decodes:
            seq = item.seq
            if budget <= 0 or seq.proposer is None or seq.grammar is not None:
                continue  # a constrained row does not draft: its mask holds for one position, not a run
            k = min(seq.policy.k(len(decodes), seq.params.max_tokens - seq.out.generated), budget)
            guess = seq.proposer.propose(k) if k > 0 else []
            if guess:
                drafted[id(item)] = Scheduled(seq, item.tokens + guess, tuple(guess))
                expected += seq.policy.expected(len(guess))
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
        seq.cached += 1 + accepted
        self.cache.lengths[seq.slot] = seq.cached
        return run


def _span(items: list[Scheduled]) -> int:
    """Cache slots a call over these items spans (idle ones between them included)."""
    slots = [item.seq.slot for item in items]
    return max(slots) - min(slots) + 1 if slots else 0
