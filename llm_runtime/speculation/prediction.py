"""A request's predicted output (OpenAI's Predicted Outputs) as a draft source that follows the output like a diff.

The output is expected to copy most of the prediction (a code edit: the original file) with edits in between. The
proposer keeps a cursor into the prediction: while the output matches it, the cursor advances and the draft is
the prediction from the cursor on. After a divergence (an inserted, deleted or changed span) it re-aligns the way
a diff does: the output's last few tokens are looked up in an n-gram index over the prediction, longest first,
preferring the first occurrence at or after the last aligned position (the edit moved on, not back), and the
draft continues after that occurrence. A single token re-aligns only within `reach` tokens of that position:
alone, it matches too many places.
"""
from __future__ import annotations

import bisect
from collections.abc import Iterable


class PredictionLookup:
    """Drafts from a predicted output (token ids), fed with the sequence's generated tokens only."""

    def __init__(self, prediction: Iterable[int], max_n: int = 4, reach: int = 64):
        self.prediction = [int(t) for t in prediction]
        self.max_n, self.reach = max_n, reach
        self.output: list[int] = []
        self.cursor: int | None = 0  # the prediction's position the next output token is expected at; None: lost
        self.anchor = 0  # just after the last aligned position
        self.streak = 0  # output tokens in a row that followed the prediction at the cursor
        self._ends: dict[tuple[int, ...], list[int]] = {}  # n-gram -> positions just after its occurrences, sorted
        pred = self.prediction
        for n in range(1, max_n + 1):
            for end in range(n, len(pred) + 1):
                self._ends.setdefault(tuple(pred[end - n:end]), []).append(end)

    def extend(self, tokens: Iterable[int]) -> None:
        """Append generated tokens: each one either follows the prediction at the cursor or re-aligns it."""
        pred = self.prediction
        for t in tokens:
            self.output.append(int(t))
            if self.cursor is not None and self.cursor < len(pred) and pred[self.cursor] == t:
                self.cursor += 1
                self.anchor = self.cursor
                self.streak += 1
            else:
                self.cursor, self.streak = self._realign(), 0

    def propose(self, k: int) -> list[int]:
        """Up to k tokens of the prediction after the cursor; [] when lost or at its end."""
        if k <= 0 or self.cursor is None:
            return []
        return self.prediction[self.cursor:self.cursor + k]

    def take_streak(self) -> int:
        """The output tokens that followed the prediction since the last divergence or take; counting restarts."""
        streak, self.streak = self.streak, 0
        return streak

    def _realign(self) -> int | None:
        """The position just after the longest suffix of the output found in the prediction (n >= 2 anywhere,
        the first at or after the anchor, else the last before it; n == 1 only within `reach` after the anchor)."""
        out = self.output
        for n in range(min(self.max_n, len(out)), 0, -1):
            ends = self._ends.get(tuple(out[-n:]))
            if not ends:
                continue
            i = bisect.bisect_left(ends, self.anchor)
            if i < len(ends) and (n > 1 or ends[i] - self.anchor <= self.reach):
                self.anchor = ends[i]
                return ends[i]
            if n > 1:
                self.anchor = ends[-1]
                return ends[-1]
        return None
