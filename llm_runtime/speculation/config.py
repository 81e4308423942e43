"""What a model's engine speculates with: the method and its limits, validated once."""
from __future__ import annotations

from dataclasses import dataclass

from llm_runtime.errors import ParameterError

from .policy import DraftPolicy
from .proposer import PromptLookup, Proposer
from .suffix_cache import MODES, SuffixCache

METHODS = ("ngram", "suffix")


@dataclass(frozen=True)
class SpeculationConfig:
    """`method` "ngram": prompt lookup; "suffix": prompt lookup and the suffix cache (vLLM's names), the row drafting
    from whichever matches its recent tokens longer. `num_speculative_tokens`: the most drafts a row verifies per
    step (the policy chooses fewer when they keep failing or the batch is large). `min_n`..`max_n`: n-gram lengths
    tried, longest first. `suffix_cache`: "global" (one store for every request of the engine), "key" (one per API
    key id) or "request" (each row's own prompt and output); `suffix_cache_mb`: the store's memory cap;
    `suffix_depth`: the longest substring it indexes (match plus draft)."""

    method: str = "ngram"
    num_speculative_tokens: int = 4
    min_n: int = 2  # a one-token match guesses poorly (benchmarks/speculation_replay.py)
    max_n: int = 4
    suffix_cache: str = "global"
    suffix_cache_mb: int = 64
    suffix_depth: int = 32

    def __post_init__(self):
        if self.method not in METHODS:
            raise ParameterError("speculation", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not isinstance(self.num_speculative_tokens, int) or not 1 <= self.num_speculative_tokens <= 16:
            raise ParameterError("num_speculative_tokens", f"must be an integer in 1..16, got {self.num_speculative_tokens!r}")
        if not (isinstance(self.min_n, int) and isinstance(self.max_n, int) and 1 <= self.min_n <= self.max_n <= 8):
            raise ParameterError("speculation", f"n-gram lengths need 1 <= min_n <= max_n <= 8, got {self.min_n}, {self.max_n}")
        if self.suffix_cache not in MODES:
            raise ParameterError("suffix_cache", f"must be one of {', '.join(MODES)}, got {self.suffix_cache!r}")
        if not isinstance(self.suffix_cache_mb, int) or not 1 <= self.suffix_cache_mb <= 1 << 16:
            raise ParameterError("suffix_cache_mb", f"must be an integer in 1..65536, got {self.suffix_cache_mb!r}")
        if not isinstance(self.suffix_depth, int) or not self.num_speculative_tokens < self.suffix_depth <= 128:
            raise ParameterError("suffix_depth", f"must be an integer over num_speculative_tokens and at most 128, "
                                                 f"got {self.suffix_depth!r}")

    def proposer(self, prompt_ids: list[int]) -> Proposer:
        """A new sequence's proposer, fed its prompt."""
        return PromptLookup(prompt_ids, self.min_n, self.max_n)

    def suffix_store(self) -> SuffixCache | None:
        """A new engine's suffix cache (method "suffix"), else None: each engine, Ray replica or actor has its own."""
        if self.method != "suffix":
            return None
        return SuffixCache(self.suffix_cache, self.suffix_cache_mb << 20, self.suffix_depth)

    def policy(self) -> DraftPolicy:
        """A new sequence's draft policy."""
        return DraftPolicy(max_k=self.num_speculative_tokens)
