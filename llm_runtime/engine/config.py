"""The engine's one configuration object, validated once and passed down to the scheduler and the cache."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineConfig:
    """How much the engine runs at once. `max_concurrency` is the one name of the concurrency setting, from the
    `--max-concurrency` flag to the scheduler: sequences generated at once, each in its own cache slot."""

    max_concurrency: int = 16
    max_waiting: int = 1024  # queued requests beyond which submit raises QueueFullError
    token_budget: int = 256  # tokens one step computes: every running decode, then prompt chunks
    # prompt tokens of one sequence per graph call. GroupQueryAttention computes a call's whole query x key
    # rectangle, so chunks skip most of its causally masked half: 256-token chunks prefilled 1,008 tokens 15%
    # faster than one call (the former single path's measurement, kept; 128 against 256 is in README)
    chunk_size: int = 256
    max_cache_bytes: int | None = None  # cap on the KV cache's memory; None: no cap

    def __post_init__(self):
        for name in ("max_concurrency", "max_waiting"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        # a prompt chunk is never one token of a longer prompt (prompt_split), so a limit of 1 could never start one
        for name in ("token_budget", "chunk_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 2:
                raise ValueError(f"{name} must be an integer >= 2, got {getattr(self, name)!r}")
        if self.max_cache_bytes is not None and (not isinstance(self.max_cache_bytes, int) or self.max_cache_bytes < 1):
            raise ValueError(f"max_cache_bytes must be a positive integer or None, got {self.max_cache_bytes!r}")
