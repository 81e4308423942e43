"""How many tokens a sequence drafts each step: from its own acceptance history and the size of the batch.

Cost model (measured with benchmarks/speculation_check.py on the default int4 model, 2 cores): a graph call over
n tokens of one sequence costs about 1 + 0.28 (n - 1) times a one-token call (1.26x at 2 tokens, 1.84x at 4): a
fixed part F (weights streamed once per call, per-call overhead) and a part per token, F = 2.6 in units of the
per-token part. In a batch of B decodes each row's share of the fixed part is F / B, so a draft token costs a
row relatively more as the batch grows: at B = 1 one draft adds 28% to the row's cost, at B = 8 it adds 76%.

A row with per-draft acceptance rate a that drafts k tokens emits E(a, k) = (1 - a^(k + 1)) / (1 - a) tokens
per call at a cost of (F / B + 1 + k); the policy picks the k that maximises E / cost, 0 when no k beats plain
decoding. The step then checks that the drafts pay for the call of their own they need (`drafts_pay`): in a
large batch a lone row's draft does not. `a` is an exponentially weighted count of accepted and rejected drafts. A row whose drafts fail
`fail_limit` times in a row, or whose estimate says drafting does not pay, stops drafting for a cooldown that
doubles each time it happens again (up to `max_cooldown` steps) and resets when a draft is accepted; after a
cooldown one draft probes again.
"""
from __future__ import annotations

from dataclasses import dataclass, field

FIXED_COST = 2.6  # the fixed part of a graph call, in units of its per-token part (1.84x at 4 tokens)


def expected_tokens(a: float, k: int) -> float:
    """Tokens emitted per verification of k drafts, each accepted with probability a given the previous ones."""
    return k + 1.0 if a >= 1.0 else (1.0 - a ** (k + 1)) / (1.0 - a)


def drafts_pay(drafted: int, expected: float, width: int, drafted_span: int, plain: int, plain_span: int,
               all_span: int, fixed_cost: float = FIXED_COST) -> bool:
    """Whether a step's drafts pay for the call they need. Without them the step's decodes are one one-token call
    over all their slots (cost F + `all_span`). With them the `drafted` rows get a call of their own, their
    `drafted_span` slots right-padded to `width` tokens (F + span x width), and the `plain` others a one-token
    call (F + `plain_span`, when there are any); the drafting rows are expected to emit `expected` tokens."""
    without = (drafted + plain) / (fixed_cost + all_span)
    cost = fixed_cost + drafted_span * width + (fixed_cost + plain_span if plain else 0.0)
    return (plain + expected) / cost > 1.02 * without


def best_k(a: float, max_k: int, batch: int, fixed_cost: float = FIXED_COST) -> int:
    """The number of drafts (0..max_k) that maximises tokens per unit of cost for one row of a batch of `batch`."""
    share = fixed_cost / max(batch, 1) + 1.0
    rates = [expected_tokens(a, k) / (share + k) for k in range(max_k + 1)]
    best = max(range(max_k + 1), key=lambda k: (rates[k], -k))
    return best if rates[best] > rates[0] * 1.02 else 0  # a 2% margin: the model is only a model


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
