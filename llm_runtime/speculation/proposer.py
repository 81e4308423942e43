"""Draft proposers: guesses of a sequence's next tokens, checked by the model in one multi-token call.

A proposer follows one sequence: `extend` feeds it the tokens that sequence now holds (prompt, then emitted
tokens), `propose(k)` guesses up to k tokens that come next. Prompt lookup (vLLM's `ngram` method, llama.cpp's
lookup decoding) is the first: text that quotes its input (answers over a passage, summaries, code edits, JSON that
echoes fields) repeats n-grams of its prompt, and what followed them there is a good guess of what follows now.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class Proposer(Protocol):
    def extend(self, tokens: Iterable[int]) -> None:
        """Append tokens the sequence now holds."""

    def propose(self, k: int) -> list[int]:
        """Up to k guessed next tokens; [] when there is no guess."""


class PromptLookup:
    """The longest recent n-gram match, `min_n <= n <= max_n`: the sequence's last n tokens are looked up among
    its earlier tokens; the tokens that followed their latest earlier occurrence are the draft.

    Incremental: one dict per n maps an n-gram to the position just after its latest occurrence that has a
    following token, so `extend` costs (max_n - min_n + 1) dict writes per token and `propose` as many lookups,
    whatever the length. A match close to the end (a repeating pattern) is continued by the pattern itself.
    """

    def __init__(self, tokens: Iterable[int] = (), min_n: int = 1, max_n: int = 3):
        if not 1 <= min_n <= max_n:
            raise ValueError(f"prompt lookup needs 1 <= min_n <= max_n, got {min_n} and {max_n}")
        self.min_n, self.max_n = min_n, max_n
        self.tokens: list[int] = []
        self._after: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in range(min_n, max_n + 1)}
        self.extend(tokens)

    def extend(self, tokens: Iterable[int]) -> None:
        toks, after = self.tokens, self._after
        for t in tokens:
            end = len(toks)  # the n-grams ending just before `t` now have a following token, at `end`
            for n in range(self.min_n, min(self.max_n, end) + 1):
                after[n][tuple(toks[end - n:end])] = end
            toks.append(int(t))

    def propose(self, k: int) -> list[int]:
        return self.lookup(k)[0]

    def lookup(self, k: int) -> tuple[list[int], int]:
        """Up to k drafts and the length n of the match they continue ([] and 0 without one)."""
        toks, end = self.tokens, len(self.tokens)
        if k <= 0:
            return [], 0
        for n in range(min(self.max_n, end), self.min_n - 1, -1):
            start = self._after[n].get(tuple(toks[end - n:]))
            if start is not None:
                draft: list[int] = []
                for i in range(start, start + k):  # past the end, the match continues with the draft itself
                    draft.append(toks[i] if i < end else draft[i - end])
                return draft, n
        return [], 0
