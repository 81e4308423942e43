"""The slot table a LoRA graph reads (model_builder/contract.py): every loaded adapter's factors side by side, one
slot each; a row's `lora_index` (1..slots, 0 for the base model) masks the columns of its slot.

    tables[lora.{site}.a]: [slots * n * rank, in]   slot k, module j: A in rows ((k-1)*n + j) * rank + 0..r
    tables[lora.{site}.b]: [slots * n * rank, out]  the same rows: B.T (scale folded) at the module's own columns
    tables[lora.slot_of.{n}]: [slots * n * rank]    each row's slot

Every table is slot-major, so the slots lo..hi of all of them are contiguous views (`views`): a call binds only
the slots its rows use.

Adapters of a lower rank than the table's are padded with zeros, which add nothing. A table never changes shape:
growing (more slots, a higher rank) makes a new table with the old slots copied in, so a graph call that reads the
old one is never disturbed; a slot is written only while no running row selects it.
"""
from __future__ import annotations

import numpy as np

from llm_runtime.model_builder.contract import LORA_SLOT_OF, LoraSite

from .lora import LoraAdapter


class AdapterMismatchError(ValueError):
    """An adapter names a module the graph carries no LoRA input for, or its factors have the wrong shape."""


def site_bytes(sites: tuple[LoraSite, ...], rank: int, itemsize: int) -> int:
    """Bytes one slot takes at `rank` (per module) over every site."""
    return sum(len(s.modules) * rank * (s.in_dim + s.out_dim) for s in sites) * itemsize


class SlotTable:
    """`slots` adapter slots (numbered from 1) at `rank` per module, in `dtype` (the graph's io dtype)."""

    def __init__(self, sites: tuple[LoraSite, ...], dtype, slots: int, rank: int):
        self.sites, self.dtype, self.slots, self.rank = sites, np.dtype(dtype), slots, rank
        self.tables: dict[str, np.ndarray] = {}
        for s in sites:
            n = len(s.modules)
            self.tables[s.a_name] = np.zeros((slots * n * rank, s.in_dim), self.dtype)
            self.tables[s.b_name] = np.zeros((slots * n * rank, s.out_dim), self.dtype)
            self.tables[LORA_SLOT_OF % n] = np.repeat(np.arange(1, slots + 1, dtype=np.int64), n * rank)
        self._where = {m: (s, j, first, cols) for s in sites for j, (m, first, cols) in enumerate(s.modules)}

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tables.values())

    def check(self, adapter: LoraAdapter) -> None:
        """Raise AdapterMismatchError unless every pair of `adapter` fits a module of the sites."""
        for module, pair in adapter.pairs.items():
            if module not in self._where:
                known = sorted({m.rsplit(".", 1)[-1] for m in self._where})
                raise AdapterMismatchError(
                    f"adapter {adapter.name!r} targets {module}, which this build carries no LoRA input for "
                    f"(its LoRA targets: {', '.join(known)})")
            site, _, _, cols = self._where[module]
            want_a, want_b = (pair.rank, site.in_dim), (cols, pair.rank)
            if pair.a.shape != want_a or pair.b.shape != want_b:
                raise AdapterMismatchError(
                    f"adapter {adapter.name!r}: {module} has factors {pair.a.shape} and {pair.b.shape}, "
                    f"expected {want_a} and {want_b} (an adapter for another base model?)")
            # a bound slot's columns are masked (multiplied by 0) for other rows: an inf there would be NaN for all
            if not (np.isfinite(pair.a).all() and np.isfinite(pair.b).all()):
                raise AdapterMismatchError(f"adapter {adapter.name!r}: {module} has factors that are not finite")

    def _columns(self, site: LoraSite, slot: int, j: int, rank: int | None = None) -> slice:
        r = self.rank if rank is None else rank
        first = ((slot - 1) * len(site.modules) + j) * self.rank
        return slice(first, first + r)

    def write(self, slot: int, adapter: LoraAdapter) -> None:
        """Put `adapter` in `slot` (checked; its rank at most the table's)."""
        assert 1 <= slot <= self.slots and adapter.rank <= self.rank
        self.check(adapter)
        self.clear(slot)
        for module, pair in adapter.pairs.items():
            site, j, first, cols = self._where[module]
            c = self._columns(site, slot, j, pair.rank)
            self.tables[site.a_name][c] = pair.a
            self.tables[site.b_name][c, first:first + cols] = pair.b.T

    def clear(self, slot: int) -> None:
        for s in self.sites:
            c = slice((slot - 1) * len(s.modules) * self.rank, slot * len(s.modules) * self.rank)
            self.tables[s.a_name][c] = 0
            self.tables[s.b_name][c] = 0

    def views(self, lo: int, hi: int) -> dict[str, np.ndarray]:
        """Every table's rows of slots lo..hi (1-based, inclusive): contiguous views, no copy."""
        out = {}
        for s in self.sites:
            w = len(s.modules) * self.rank
            rows = slice((lo - 1) * w, hi * w)
            out[s.a_name], out[s.b_name] = self.tables[s.a_name][rows], self.tables[s.b_name][rows]
            out[LORA_SLOT_OF % len(s.modules)] = self.tables[LORA_SLOT_OF % len(s.modules)][rows]
        return out

    def grown(self, slots: int, rank: int) -> SlotTable:
        """A new table of at least this table's slots and rank holding the same adapters in the same slots."""
        new = SlotTable(self.sites, self.dtype, max(slots, self.slots), max(rank, self.rank))
        for s in self.sites:
            for slot in range(1, self.slots + 1):
                for j in range(len(s.modules)):
                    old, to = self._columns(s, slot, j), new._columns(s, slot, j, self.rank)
                    new.tables[s.a_name][to] = self.tables[s.a_name][old]
                    new.tables[s.b_name][to] = self.tables[s.b_name][old]
        return new
