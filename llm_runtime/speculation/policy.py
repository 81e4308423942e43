"""How many tokens a sequence drafts each step: from its own acceptance history and the size of the batch.

Cost model, in units of one token's work: a graph call costs A + sum over its rows of (B + the row's tokens), a
fixed part A per call (weights streamed once, per-call overhead) and B per row (its attention over the cached
tokens, its share of the bookkeeping). Fitted to graph calls of the default int4 model (`--activations mixed`),
200 cached tokens, calls over 1, 2, 3, 5 tokens of 1, 4 and 8 rows, interleaved 30 times, on a 2-core AMD EPYC
with AVX2 (2026-12-06, `benchmarks/verify_cost.py --threads 1 --clock cpu`: CPU time, which the other jobs on
that machine leave alone): 1 row 1.28x / 1.51x / 2.03x the one-token call, 4 rows 1.61x / 2.10x / 3.16x, 8 rows
1.68x / 2.30x / 3.69x; A = 2.5, B = 0.2 gives 1.27x / 1.54x / 2.08x, 1.55x / 2.10x / 3.19x, 1.66x / 2.32x /
3.64x. (The former fit, A = 3, B = 1, came from 2-thread wall times on an AVX-512 machine under load 8, 8 rows
1.47x at 2 tokens; here it priced a 2-token call over 8 rows at 1.42x against 1.68x measured, so rows of a
large batch drafted where it did not pay.)

A row with per-draft acceptance rate a that drafts k tokens emits E(a, k) = (1 - a^(k + 1)) / (1 - a) tokens
per call at a cost of (A / batch + B + 1 + k); the policy picks the k that maximises E / cost, 0 when no k beats
plain decoding. The step then checks that the drafts pay for the call of their own they need (`drafts_pay`): in
a large batch a lone row's draft does not. `a` is an exponentially weighted count of accepted and rejected
drafts. A row whose drafts fail `fail_limit` times in a row, or whose estimate says drafting does not pay, stops
drafting for a cooldown that doubles each time it happens again (up to `max_cooldown` steps) and resets when a
draft is accepted; after a cooldown one draft probes again.
"""
from __future__ import annotations

from dataclasses import dataclass

CALL_COST = 2.5  # A: the fixed part of a graph call, in units of one token's work
ROW_COST = 0.2  # B: the part per row of a call


def expected_tokens(a: float, k: int) -> float:
    """Tokens emitted per verification of k drafts, each accepted with probability a given the previous ones."""
    return k + 1.0 if a >= 1.0 else (1.0 - a ** (k + 1)) / (1.0 - a)


def call_cost(rows: int, tokens: int) -> float:
    """The cost model's price of one graph call over `rows` rows holding `tokens` token positions in all."""
    return CALL_COST + ROW_COST * rows + tokens


def drafts_pay(drafted: int, expected: float, width: int, drafted_span: int, plain: int, plain_span: int,
               all_span: int) -> bool:
    """Whether a step's drafts pay for the call they need. Without them the step's decodes are one one-token call
    over all their slots (`all_span` rows). With them the `drafted` rows get a call of their own, their
    `drafted_span` slots right-padded to `width` tokens, and the `plain` others a one-token call over
    `plain_span` slots (when there are any); the drafting rows are expected to emit `expected` tokens."""
    without = (drafted + plain) / call_cost(all_span, all_span)
    cost = call_cost(drafted_span, drafted_span * width) + (call_cost(plain_span, plain_span) if plain else 0.0)
    return (plain + expected) / cost > 1.02 * without


def best_k(a: float, max_k: int, batch: int) -> int:
    """The number of drafts (0..max_k) that maximises tokens per unit of cost for one row of a batch of `batch`."""
    share = CALL_COST / max(batch, 1) + ROW_COST + 1.0
    rates = [expected_tokens(a, k) / (share + k) for k in range(max_k + 1)]
    best = max(range(max_k + 1), key=lambda k: (rates[k], -k))
    return best if rates[best] > rates[0] * 1.02 else 0  # a 2% margin: the model is only a model


def best_prefix(probs: list[float], batch: int) -> int:
    """How many tokens of a draft to verify (0..len) when its i-th token and those before it are accepted with
    probability probs[i] (decreasing): the prefix that maximises expected tokens per unit of cost, 1 + the sum of
    its probabilities over (share + its length), for one row of a batch of `batch`; 0 unless it beats plain
    decoding by the policy's 2% margin."""
    share = CALL_COST / max(batch, 1) + ROW_COST + 1.0
    best, rate, expected = 0, 1.0 / share * 1.02, 1.0
    for j, p in enumerate(probs, 1):
        expected += p
        if expected / (share + j) > rate:
            best, rate = j, expected / (share + j)
    return best


@dataclass
class DraftPolicy:
    """One sequence's speculation state: its acceptance estimate, failure streak and cooldown."""

    max_k: int = 4
    decay: float = 0.9  # weight of the history at each verification
    fail_limit: int = 3
    max_cooldown: int = 64
    accepted: float = 1.0  # weighted drafts accepted; the prior is one accepted and one rejected of two
    tried: float = 2.0  # weighted drafts tried
    failures: int = 0  # verifications in a row that accepted nothing
    cooldown: int = 0  # steps left without drafting
    backoff: int = 4  # the next cooldown's length
    batch: int = 1  # the batch size the last `k` was asked for

    @property
    def rate(self) -> float:
        return self.accepted / self.tried

    def expected(self, k: int) -> float:
        """Tokens a verification of k drafts is expected to emit, by this row's estimate."""
        return expected_tokens(self.rate, k)

    def k(self, batch: int, remaining: int) -> int:
        """Drafts to ask for this step, in a batch of `batch` decoding rows with `remaining` tokens still allowed
        (the bonus token is the last one, so at most remaining - 1 drafts can be used). Counts down a cooldown.
        When the estimate says drafting does not pay, one draft probes whether the text has started to repeat
        (a failed probe starts a cooldown, so a row with nothing to copy probes once per `max_cooldown` steps)."""
        if self.cooldown > 0:
            self.cooldown -= 1
            return 0
        self.batch = batch
        return min(max(best_k(self.rate, self.max_k, batch), 1), remaining - 1)

    def resume(self, matched: int) -> None:
        """End a cooldown on outside evidence: the output followed the draft source for `matched` tokens on its
        own, which drafts would have had accepted (a prediction that the output is copying again)."""
        self.update(matched, matched)
        self.cooldown = 0

    def update(self, drafted: int, accepted: int) -> None:
        """Record one verification: `accepted` of `drafted` drafts were taken (the first rejection ends the run:
        the drafts after it were never tried)."""
        self.accepted = self.decay * self.accepted + accepted
        self.tried = self.decay * self.tried + accepted + (accepted < drafted)
        if accepted:
            self.failures, self.backoff = 0, 4
            return
        self.failures += 1
        if self.failures >= self.fail_limit or best_k(self.rate, self.max_k, self.batch) == 0:
            self.cooldown, self.failures = self.backoff, 0
            self.backoff = min(2 * self.backoff, self.max_cooldown)
