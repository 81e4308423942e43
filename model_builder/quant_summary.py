"""What a build did with each quantized tensor, per source format: copied exactly, converted exactly to a wider
format, or requantized (with the reason). `llm-runtime build` prints it; the manifest records it."""
from __future__ import annotations

from collections import Counter


class QuantSummary:
    """(source format, outcome) -> tensors."""

    def __init__(self):
        self.counts: Counter[tuple[str, str]] = Counter()

    def add(self, fmt: str, outcome: str) -> None:
        self.counts[(fmt, outcome)] += 1

    def as_dict(self) -> dict[str, dict[str, int]]:
        """{format: {outcome: tensors}}, formats and outcomes sorted."""
        out: dict[str, dict[str, int]] = {}
        for (fmt, outcome), n in sorted(self.counts.items()):
            out.setdefault(fmt, {})[outcome] = n
        return out

    def lines(self) -> list[str]:
        """One line per format and outcome: '  Q4_1: 210 tensors copied exactly'."""
        return [f"  {fmt}: {n} tensor{'s' if n != 1 else ''} {outcome}"
                for fmt, outcomes in self.as_dict().items() for outcome, n in outcomes.items()]
