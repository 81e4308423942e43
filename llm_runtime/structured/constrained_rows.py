"""The engine's side of structured output: a grammar state per constrained sequence, the masks of a graph call's
constrained rows computed together (in a worker thread, while the graph runs), and the tokens the grammar forces.

    submit   -> attach(seq): compile (cached) and give the sequence its own matcher; bad constraints raise here
    step     -> start(call) before the graph call; masks.row(seq) after it, applied to the logits before sampling
    sampled  -> advance(seq, token): consume it, return the forced tokens that follow (fed as one chunk next step)
    drafted  -> draftable(draft) before the call; in the verified run, mask(seq) at each position after the first
    finished -> release(seq): the matcher is dropped (cancellation included)
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from llm_runtime.errors import ParameterError

from .constraint import GrammarCompiler
from .grammar_state import GrammarState
from .token_mask import MaskBatch


class CallMasks:
    """The masks of one graph call's constrained rows, being computed; `row(seq)` waits for them."""

    def __init__(self, future: Future, rows: dict[int, int]):
        self._future, self._rows = future, rows  # seq id -> row of the mask buffer

    def row(self, seq) -> np.ndarray | None:
        """int32 [words] for a constrained sequence of this call, None for the others."""
        i = self._rows.get(seq.id)
        return None if i is None else self._future.result()[i]


class ConstrainedRows:
    def __init__(self, folder):
        self.folder = folder
        self._compiler: GrammarCompiler | None = None
        self._masks: MaskBatch | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm-masks")
        self._lock = threading.Lock()
        self.active = 0  # sequences holding a matcher
        self.fast_forward = True  # feed forced tokens as chunks (off: one step per token, for benchmarks)

    @property
    def compiler(self) -> GrammarCompiler:
        """Built on the first constrained request: llguidance's view of a large vocabulary takes a moment."""
        with self._lock:
            if self._compiler is None:
                f = self.folder
                self._compiler = GrammarCompiler(f.tokenizer.to_str(), f.vocab_size, f.eos_token_ids)
                self._masks = MaskBatch(f.vocab_size)
            return self._compiler

    @property
    def mask_seconds(self) -> float:
        return self._masks.seconds if self._masks else 0.0

    @property
    def mask_rows(self) -> int:
        return self._masks.rows if self._masks else 0

    def attach(self, seq) -> None:
        """Give a sequence whose params carry a constraint its matcher (raises ParameterError if it cannot compile)."""
        constraint = seq.params.constraint
        seq.grammar = None
        if constraint is not None:
            seq.grammar = GrammarState(self.compiler.matcher(constraint), self.folder.eos_token_ids)
            with self._lock:
                self.active += 1

    def start(self, items) -> CallMasks | None:
        """Begin computing the masks of the call's constrained rows that sample (None if it has none)."""
        if not self.active:  # no request holds a matcher: nothing to look at on the decode step
            return None
        states = [item.seq for item in items if item.wants_logits and getattr(item.seq, "grammar", None)]
        if not states:
            return None
        rows = {seq.id: i for i, seq in enumerate(states)}
        grammars = [seq.grammar for seq in states]
        return CallMasks(self._worker.submit(self._masks.fill, grammars), rows)

    def mask(self, seq) -> np.ndarray:
        """int32 [words]: the mask of a constrained sequence's next token, computed now (inside a verified run)."""
        return self._masks.fill([seq.grammar])[0]

    def advance(self, seq, token: int, room: int) -> list[int]:
        """Consume a sampled token; the forced tokens after it (at most `room`), consumed too."""
        grammar = seq.grammar
        forced = []
        if grammar.consume(token):
            forced = grammar.forced()[:max(room, 0)] if self.fast_forward else []
            if not forced or grammar.consume_forced(forced):
                return forced
        # a token the mask allowed fails only where llguidance meets a limit in what it builds lazily (a regex of
        # `a{1000000}` compiles, then its lexer grows too large at the first mask or token): the request's fault
        raise ParameterError(seq.params.constraint.param, f"cannot be enforced: {grammar.error.splitlines()[0]}")

    def release(self, seq) -> None:
        if getattr(seq, "grammar", None) is not None:
            seq.grammar = None
            with self._lock:
                self.active -= 1
