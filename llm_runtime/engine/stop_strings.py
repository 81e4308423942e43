"""Stop strings over a stream of text deltas, never showing any part of a stop string."""
from __future__ import annotations

from collections.abc import Sequence


class StopStringMatcher:
    """Cuts a text stream at the first stop string.

    `feed` holds back the longest tail that could still begin a stop string, so what it returns is
    always safe to show. When stop strings overlap, the one that ends first wins (ties: the one that
    starts first), which is the one a character-by-character stream would see first; so the result
    does not depend on how the text was split into deltas.
    """

    def __init__(self, stops: Sequence[str] = ()):
        self.stops: tuple[str, ...] = tuple(dict.fromkeys(s for s in stops if s))
        self.matched: str | None = None  # the stop string that ended the stream
        self._held = ""

    @property
    def stopped(self) -> bool:
        return self.matched is not None

    def feed(self, delta: str) -> tuple[str, bool]:
        """Add a delta; return (text safe to emit now, whether a stop string was reached)."""
        if not self.stops:
            return delta, False
        if self.matched is not None:
            return "", True
        text = self._held + delta
        hit = self._first_match(text)
        if hit is not None:
            start, self.matched = hit
            self._held = ""
            return text[:start], True
        keep = self._partial_tail(text)
        self._held = text[len(text) - keep:]
        return text[:len(text) - keep], False

    def flush(self) -> str:
        """Release the held-back tail when the stream ends for another reason."""
        held, self._held = self._held, ""
        return held

    def _first_match(self, text: str) -> tuple[int, str] | None:
        best: tuple[int, int, str] | None = None  # (end, start, stop)
        for stop in self.stops:
            start = text.find(stop)
            if start >= 0 and (best is None or (start + len(stop), start) < best[:2]):
                best = (start + len(stop), start, stop)
        return None if best is None else (best[1], best[2])

    def _partial_tail(self, text: str) -> int:
        """Length of the longest tail of `text` that is a proper prefix of some stop string."""
        longest = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:k]):
                    longest = k
                    break
        return longest
