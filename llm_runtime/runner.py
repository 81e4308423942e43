"""Tensors in, logits out: one graph call over cache slots, with IO binding and no per-step cache copy."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kv_cache import KVCache
from model_builder import contract as C

from .model_folder import ModelFolder


@dataclass
class Step:
    """One graph call over the first `rows` cache slots, each row right-padded to `S` tokens."""

    input_ids: np.ndarray  # int64 [rows, S]
    totals: np.ndarray  # int64 [rows]: tokens in each row's cache after this step
    query_lens: np.ndarray  # int64 [rows]: valid tokens of each row in this step (0: idle row)
    logits_at: np.ndarray  # int64 [n]: flat positions (row * S + col) whose logits are wanted


def prefill_inputs(prompt: list[int], cached: int = 0) -> Step:
    """A single sequence's prompt (or the rest of it, after `cached` tokens) in one call; logits of the last token."""
    ids = np.asarray([prompt], dtype=np.int64)  # [1, S]
    n = ids.shape[1]
    return Step(ids, np.array([cached + n]), np.array([n]), np.array([n - 1]))


def decode_inputs(tokens: np.ndarray, totals: np.ndarray) -> Step:
    """One new token per row: tokens int64 [rows], totals int64 [rows] after the step."""
    rows = len(tokens)
    return Step(tokens.reshape(rows, 1).astype(np.int64), totals, np.ones(rows, np.int64), np.arange(rows))


class ModelRunner:
    """Owns the session and its IO binding; the KV cache is bound once and rebound only when it changes."""

    def __init__(self, folder: ModelFolder, session, cache_device: str = "cpu"):
        self.folder, self.session = folder, session
        self.contract = folder.contract
        # optional inputs with defaults are listed as overridable initializers, not as inputs
        names = {i.name for i in session.get_inputs()} | {i.name for i in session.get_overridable_initializers()}
        self.has_query_seqlens = C.QUERY_SEQLENS in names
        self.has_logits_indices = C.LOGITS_INDICES in names
        self.vocab = folder.vocab_size
        self.binding = session.io_binding()
        self.cache_device = cache_device
        self._bound: tuple | None = None
        self._keep: list = []  # host arrays bound by pointer must outlive the run

    def _bind_cache(self, cache: KVCache, rows: int) -> None:
        key = (cache, cache.version, rows)  # the cache object itself: an id() could be reused after it is freed
        if self._bound is not None and self._bound[0] is cache and self._bound[1:] == key[1:]:
            return
        dev, dev_id, dtype, shape = cache.memory.device_type, cache.memory.device_id, cache.dtype, cache.shape(rows)
        for layer in range(self.contract.num_layers):
            for j, (past, present) in enumerate(zip(self.contract.past_names(layer), self.contract.present_names(layer))):
                ptr = cache.pointer(2 * layer + j)
                self.binding.bind_input(past, dev, dev_id, dtype, shape, ptr)
                self.binding.bind_output(present, dev, dev_id, dtype, shape, ptr)
        self._bound = key

    def _bind_host(self, name: str, array: np.ndarray, output: bool = False) -> None:
        array = np.ascontiguousarray(array)
        self._keep.append(array)
        bind = self.binding.bind_output if output else self.binding.bind_input
        bind(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)

    def run(self, step: Step, cache: KVCache) -> np.ndarray:
        """Run one step; returns logits float32 [n, vocab] for `step.logits_at`."""
        rows, width = step.input_ids.shape
        cache.ensure_capacity(int(step.totals.max()))
        self._bind_cache(cache, rows)
        self._keep.clear()
        t = int(step.totals.max())
        mask = np.ones((1, t), np.int64) if rows == 1 else (np.arange(t) < step.totals[:, None]).astype(np.int64)
        self._bind_host(self.contract.input_ids, step.input_ids)
        self._bind_host(self.contract.attention_mask, mask)
        if self.has_query_seqlens:
            self._bind_host(C.QUERY_SEQLENS, step.query_lens.astype(np.int64))
        if self.has_logits_indices:
            self._bind_host(C.LOGITS_INDICES, step.logits_at.astype(np.int64))
            logits = np.empty((1, len(step.logits_at), self.vocab), np.float32)
        else:
            logits = np.empty((rows, width, self.vocab), np.float32)
        self._bind_host(self.contract.logits, logits, output=True)
        self.session.run_with_iobinding(self.binding)
        cache.lengths[:rows] = np.where(step.query_lens > 0, step.totals, cache.lengths[:rows])
        if self.has_logits_indices:
            return logits[0]
        return logits.reshape(rows * width, self.vocab)[step.logits_at]
