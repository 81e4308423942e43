"""One row's draft source in the suffix cache: its recent tokens matched in the cache's trie, the continuation drafted.

In "global" and "key" modes the row reads its partition's shared trie and, when it finishes, `stored()` is what
the cache adds: the lead-in (the prompt's last `depth` tokens) and the output. In "request" mode it owns a trie of
its own prompt and output, grown token by token; its own latest tokens are in that trie too, so a match there must
occur at least twice (once earlier, with a continuation).
"""
from __future__ import annotations

import math
from collections.abc import Iterable

from .suffix_cache import SuffixCache
from .suffix_trie import Node, SuffixTrie

MIN_PROB = 0.1  # a draft goes on while its path's probability by the stored counts is at least this (vLLM's default)
SPEC_FACTOR = 1.0  # drafts at most this many times the match length (SuffixDecoding's adaptive length)


class SuffixLookup:
    """Drafts for one sequence from the suffix cache; fed its prompt, then its generated tokens."""

    def __init__(self, cache: SuffixCache, prompt_ids: list[int], key: str = ""):
        self.cache, self.partition = cache, cache.partition(key)
        self.depth = cache.depth
        self.own = SuffixTrie(self.depth) if cache.mode == "request" else None
        self._paths: list[Node] = []  # the own trie's paths ending at the last token
        self.tokens = [int(t) for t in prompt_ids[-self.depth:]]  # the lead-in, then the output
        self.lead_in = len(self.tokens)
        if self.own is not None:
            for t in prompt_ids:
                self._paths = self.own.append(self._paths, int(t))

    def extend(self, tokens: Iterable[int]) -> None:
        for t in tokens:
            self.tokens.append(int(t))
            if self.own is not None:
                self._paths = self.own.append(self._paths, int(t))

    def lookup(self, k: int) -> tuple[list[int], int, list[float]]:
        """Up to k drafts, the length of the match they continue, and each draft's path probability (the chance,
        by the stored counts, that it is accepted with those before it); [], 0, [] without a match."""
        trie = self.own if self.own is not None else self.cache.trie(self.partition)
        if trie is None or k <= 0:
            return [], 0, []
        context = self.tokens[-self.depth:]
        node, m = trie.match(context, max(self.depth - k, 1), min_count=1 if self.own is None else 2)
        if m == 0:
            return [], 0, []
        draft, probs = trie.continuation(node, min(k, math.ceil(SPEC_FACTOR * m)), MIN_PROB)
        return draft, m, probs

    def propose(self, k: int) -> list[int]:
        return self.lookup(k)[0]

    def stored(self) -> list[int]:
        """What the shared cache keeps of this row when it finishes: the lead-in and the output."""
        return self.tokens
