"""Shared prompt prefixes: a new sequence copies the cache rows of a running sequence's identical prompt prefix
(a system prompt, the history of a conversation) instead of computing them again."""
from __future__ import annotations

from dataclasses import dataclass

from ..prompt_split import reusable
from .sequence import Sequence


@dataclass(frozen=True)
class Donor:
    seq: Sequence  # a running sequence whose prompt starts like the newcomer's
    shared: int  # tokens both prompts start with, at most the newcomer's prompt less its last token (`reusable`)

    @property
    def ready(self) -> int:
        """Shared tokens already in the donor's cache: what a copy can take now."""
        return min(self.shared, self.seq.cached)


def find_donor(seq: Sequence, running: list[Sequence]) -> Donor | None:
    """The running sequence with the longest reusable prompt prefix (then the most of it cached), if any."""
    best: Donor | None = None
    for other in running:
        d = Donor(other, reusable(other.prompt_ids, seq.prompt_ids))
        if d.shared and (best is None or (d.shared, d.ready) > (best.shared, best.ready)):
            best = d
    return best
