"""What a model's engine speculates with: the method and its limits, validated once."""
from __future__ import annotations

from dataclasses import dataclass

from llm_runtime.errors import ParameterError

from .policy import DraftPolicy
from .proposer import PromptLookup, Proposer

METHODS = ("ngram",)


@dataclass(frozen=True)
class SpeculationConfig:
    """`method` "ngram": prompt lookup. `num_speculative_tokens`: the most drafts a row verifies per step (the
    policy chooses fewer when they keep failing or the batch is large). `min_n`..`max_n`: n-gram lengths tried,
    longest first."""

    method: str = "ngram"
    num_speculative_tokens: int = 4
    min_n: int = 2  # a one-token match guesses poorly (benchmarks/speculation_replay.py)
    max_n: int = 4

    def __post_init__(self):
        if self.method not in METHODS:
            raise ParameterError("speculation", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not isinstance(self.num_speculative_tokens, int) or not 1 <= self.num_speculative_tokens <= 16:
            raise ParameterError("num_speculative_tokens", f"must be an integer in 1..16, got {self.num_speculative_tokens!r}")
        if not (isinstance(self.min_n, int) and isinstance(self.max_n, int) and 1 <= self.min_n <= self.max_n <= 8):
            raise ParameterError("speculation", f"n-gram lengths need 1 <= min_n <= max_n <= 8, got {self.min_n}, {self.max_n}")

    def proposer(self, prompt_ids: list[int]) -> Proposer:
        """A new sequence's proposer, fed its prompt."""
        return PromptLookup(prompt_ids, self.min_n, self.max_n)

    def policy(self) -> DraftPolicy:
        """A new sequence's draft policy."""
        return DraftPolicy(max_k=self.num_speculative_tokens)
