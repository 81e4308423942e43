"""Tensors in, logits out: one graph call over cache slots, with IO binding and no per-step cache copy.

A LoRA build has two sessions on one data file: the plain graph runs every call in which no row has an adapter,
the LoRA graph the others, with the range of the adapters' slot table that the call's rows use bound by pointer
(rebound when the range changes or the registry swaps in a grown table): a call reads only the factors of slots
in that range, not of every loaded adapter. Measured on the default model (benchmarks/results/2026-12-08-epyc-avx2-lora.md), the LoRA graph's
extra nodes cost base-only decode steps far more than the 3% two sessions' memory is worth saving."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llm_runtime.adapters.registry import AdapterRegistry
from llm_runtime.kv_cache import KVCache
from llm_runtime.model_builder import contract as C
from llm_runtime.models.folder import ModelFolder

from .providers import session_device


@dataclass
class Step:
    """One graph call over `rows` consecutive cache slots from `first_slot`, each row right-padded to `S` tokens."""

    input_ids: np.ndarray  # int64 [rows, S]
    totals: np.ndarray  # int64 [rows]: tokens in each row's cache after this step
    query_lens: np.ndarray  # int64 [rows]: valid tokens of each row in this step (0: idle row)
    logits_at: np.ndarray  # int64 [n]: flat positions (row * S + col) whose logits are wanted
    first_slot: int = 0
    lora_index: np.ndarray | None = None  # int64 [rows]: each row's adapter slot (0: none); None: no row has one


def prefill_inputs(prompt: list[int], cached: int = 0, slot: int = 0) -> Step:
    """A single sequence's prompt (or the part after `cached` tokens) in one call; logits of the last token."""
    ids = np.asarray([prompt], dtype=np.int64)  # [1, S]
    n = ids.shape[1]
    return Step(ids, np.array([cached + n]), np.array([n]), np.array([n - 1]), slot)


def decode_inputs(tokens: np.ndarray, totals: np.ndarray) -> Step:
    """One new token per row: tokens int64 [rows], totals int64 [rows] after the step. The step holds views of
    int64 arrays: refilling them in place makes it the next step."""
    rows = len(tokens)
    ids = np.asarray(tokens, np.int64).reshape(rows, 1)
    return Step(ids, np.asarray(totals, np.int64), np.ones(rows, np.int64), np.arange(rows))


class _Bound:
    """One session's IO binding and what is bound to it."""

    def __init__(self, session):
        self.session, self.binding = session, session.io_binding()
        self.cache_key: tuple | None = None
        self.host: dict[str, np.ndarray] = {}  # host arrays bound by pointer, kept alive while bound
        self.table: tuple | None = None  # (SlotTable, first slot, last slot) bound (the LoRA session)


class ModelRunner:
    """Owns the sessions and their IO bindings; the KV cache is bound once and rebound only when it changes.
    `lora_session` and `adapters`: a LoRA build's second graph and the registry whose slot table it reads."""

    def __init__(self, folder: ModelFolder, session, lora_session=None, adapters: AdapterRegistry | None = None):
        self.folder, self.session = folder, session
        self.contract = folder.contract
        # optional inputs with defaults are listed as overridable initializers, not as inputs
        names = {i.name for i in session.get_inputs()} | {i.name for i in session.get_overridable_initializers()}
        self.has_query_seqlens = C.QUERY_SEQLENS in names
        self.has_logits_indices = C.LOGITS_INDICES in names
        self.vocab = folder.vocab_size
        self._plain = self._b = _Bound(session)
        self._lora = _Bound(lora_session) if lora_session is not None else None
        self.adapters = adapters if lora_session is not None else None
        # an accelerator session copies a host input to the device when it is bound, not when it runs: there a
        # refilled host buffer must be bound again, and the cache must live on the device
        self.device = session_device(session)
        self.copies_at_bind = self.device != "cpu"
        self._ones = np.ones(256, np.int64)
        self._decode_mask = np.zeros((1, 0), np.int64)  # one decode row on the host: [1, capacity], refilled in place
        self._decode_len = 0  # ones in it

    @property
    def binding(self):
        """The IO binding of the session the last call ran (the plain one before any)."""
        return self._b.binding

    def _bind_cache(self, cache: KVCache, first: int, rows: int) -> None:
        key = (cache, cache.version, first, rows)  # the cache object itself: an id() could be reused after it is freed
        b = self._b
        if b.cache_key is not None and b.cache_key[0] is cache and b.cache_key[1:] == key[1:]:
            return
        dev, dev_id, dtype = cache.memory.device_type, cache.memory.device_id, cache.dtype
        if dev != self.device:
            raise ValueError(f"this session needs the KV cache in {self.device} memory, not {dev}")
        for layer in range(self.contract.num_layers):
            for j, (past, present) in enumerate(zip(self.contract.past_names(layer), self.contract.present_names(layer))):
                ptr, shape = cache.pointer(2 * layer + j, first), cache.shape(rows, 2 * layer + j)
                b.binding.bind_input(past, dev, dev_id, dtype, shape, ptr)
                b.binding.bind_output(present, dev, dev_id, dtype, shape, ptr)
        b.cache_key = key

    def _feed(self, name: str, values: np.ndarray) -> None:
        """Bind a host input by pointer, keeping the array alive. On the CPU the graph reads it when it runs, so
        an array bound already (a step refilled in place) needs nothing; a device session copies at bind time."""
        b = self._b
        if b.host.get(name) is values and not self.copies_at_bind:
            return
        values = b.host[name] = np.ascontiguousarray(values)
        b.binding.bind_input(name, "cpu", 0, values.dtype, list(values.shape), values.ctypes.data)

    def _bind_adapters(self, index: np.ndarray) -> None:
        """The slots lo..hi of the registry's current table that rows of `index` use, bound once per (table, lo,
        hi): a load writes into a slot no running row reads; a grown table is a new object."""
        used = index[index > 0]
        table, lo, hi = self.adapters.table, int(used.min()), int(used.max())
        b = self._b
        if b.table is None or b.table[0] is not table or b.table[1:] != (lo, hi) or self.copies_at_bind:
            for name, values in table.views(lo, hi).items():
                self._feed(name, values)
            b.table = (table, lo, hi)

    def _output(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A host output buffer of `shape`, rebound only when the shape changes."""
        b = self._b
        buf = b.host.get(name)
        if buf is None or buf.shape != shape:
            buf = b.host[name] = np.empty(shape, np.float32)
            b.binding.bind_output(name, "cpu", 0, buf.dtype, list(shape), buf.ctypes.data)
        return buf
    def _mask(self, totals: np.ndarray, t: int, width: int, capacity: int) -> np.ndarray:
        """attention_mask: row b holds totals[b] ones, then zeros (the graph reads the count of ones as the row's
        length, the width as the longest). [rows, t = max(totals)]; one decode row on the CPU gets a
        [1, capacity] mask refilled in place, so it stays bound from step to step (one element changes)."""
        if len(totals) > 1:
            return (np.arange(t) < totals[:, None]).astype(np.int64)
        if width == 1 and not self.copies_at_bind:
            if self._decode_mask.shape[1] != capacity:
                self._decode_mask, self._decode_len = np.zeros((1, capacity), np.int64), 0
            if t == self._decode_len + 1:
                self._decode_mask[0, t - 1] = 1
            elif t != self._decode_len:
                self._decode_mask[0, :t], self._decode_mask[0, t:] = 1, 0
            self._decode_len = t
            return self._decode_mask
        if len(self._ones) < t:
            self._ones = np.ones(max(t, 2 * len(self._ones)), np.int64)
        return self._ones[:t].reshape(1, t)

    def run(self, step: Step, cache: KVCache) -> np.ndarray:
        """Run one step; returns logits float32 [n, vocab] for `step.logits_at`, valid until the next run."""
        rows, width = step.input_ids.shape
        first = step.first_slot
        t = int(step.totals.max())
        cache.ensure_capacity(t)
        lora = self._lora is not None and step.lora_index is not None and bool(step.lora_index.any())
        self._b = self._lora if lora else self._plain
        self._bind_cache(cache, first, rows)
        if lora:
            self._bind_adapters(step.lora_index)
            self._feed(C.LORA_INDEX, step.lora_index)
        self._feed(self.contract.input_ids, step.input_ids)
        self._feed(self.contract.attention_mask, self._mask(step.totals, t, width, cache.capacity))
        if self.has_query_seqlens:
            self._feed(C.QUERY_SEQLENS, step.query_lens)
        if self.has_logits_indices:
            # the graph reads an empty logits_indices as "every position": a step that samples nothing
            # (a prompt chunk short of the prompt's end) computes one row instead, unused
            at = step.logits_at if len(step.logits_at) else np.zeros(1, np.int64)
            self._feed(C.LOGITS_INDICES, at)
            shape = (1, len(at), self.vocab)
        else:
            shape = (rows, width, self.vocab)
        logits = self._output(self.contract.logits, shape)
        self._b.session.run_with_iobinding(self._b.binding)
        if rows == 1:  # a single row always has tokens
            cache.lengths[first] = step.totals[0]
        else:
            np.copyto(cache.lengths[first:first + rows], step.totals, where=step.query_lens > 0)
        if self.has_logits_indices:
            return logits[0][:len(step.logits_at)]
        return logits.reshape(rows * width, self.vocab)[step.logits_at]
