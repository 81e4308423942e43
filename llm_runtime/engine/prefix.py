"""Shared prompt prefixes: a new sequence copies the cache rows of a running sequence's identical prompt prefix
(a system prompt, the history of a conversation) instead of computing them again."""
from __future__ import annotations

from dataclasses import dataclass

from .sequence import Sequence

MIN_SHARED = 16  # tokens: a shorter common prefix is not worth a copy or a wait


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens `a` and `b` have in common."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@dataclass(frozen=True)
class Donor:
    seq: Sequence  # a running sequence whose prompt starts like the newcomer's
    shared: int  # tokens both prompts start with, at most the newcomer's prompt less its last token

    @property
    def ready(self) -> int:
        """Shared tokens already in the donor's cache: what a copy can take now."""
        return min(self.shared, self.seq.cached)


def find_donor(seq: Sequence, running: list[Sequence]) -> Donor | None:
    """The running sequence with the longest common prompt prefix (then the most of it cached), if that prefix
    holds MIN_SHARED tokens. The newcomer's last prompt token is always computed: its logits start the output."""
    limit = len(seq.prompt_ids) - 1
    best: Donor | None = None
    for other in running:
        d = Donor(other, min(common_prefix(seq.prompt_ids, other.prompt_ids), limit))
        if d.shared >= MIN_SHARED and (best is None or (d.shared, d.ready) > (best.shared, best.ready)):
            best = d
    return best
