"""Allowed-token masks for constrained rows: computed for all of a step's rows at once, applied to logits.

A mask is llguidance's bitmask: int32 [words] per row, bit `t % 32` of word `t // 32` set when token t is
allowed. `MaskBatch.fill` computes the rows of one step together on llguidance's thread pool (the Rust side
runs without the GIL); `apply_mask` is a pure function over one logits row.
"""
from __future__ import annotations

import time

import llguidance as llg
import numpy as np

from .grammar_state import GrammarState

_NEG_INF = np.float32(-np.inf)


def mask_words(vocab_size: int) -> int:
    return (vocab_size + 31) // 32


def allowed_tokens(bits: np.ndarray, vocab_size: int) -> np.ndarray:
    """bool [vocab] from one row's bitmask int32 [words]."""
    return np.unpackbits(bits.view(np.uint8), bitorder="little")[:vocab_size].view(bool)


def apply_mask(logits: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """logits float32 [vocab] with the disallowed tokens at -inf (a new array)."""
    return np.where(allowed_tokens(bits, len(logits)), logits, _NEG_INF)


class MaskBatch:
    """The thread pool for one engine. `fill(states)` -> int32 [len(states), words], a fresh array."""

    def __init__(self, vocab_size: int, threads: int | None = None):
        self.vocab_size = vocab_size
        self.words = mask_words(vocab_size)
        self.executor = llg.LLExecutor(num_threads=threads)
        self.seconds = 0.0  # time spent computing masks
        self.rows = 0  # masks computed

    def fill(self, states: list[GrammarState]) -> np.ndarray:
        """The masks for the next token of each state, computed together."""
        bits = np.zeros((len(states), self.words), np.int32)
        start = time.perf_counter()
        if len(states) == 1:
            states[0].matcher.unsafe_compute_mask_ptr(bits.ctypes.data, bits.nbytes)
        else:
            self.executor.unsafe_compute_mask_ptr([(s.matcher, i) for i, s in enumerate(states)], bits.ctypes.data,
                                                  self.words * 4, len(states))
        self.seconds += time.perf_counter() - start
        self.rows += len(states)
        return bits
