"""The adapters a model serves: names, which slot of the table each holds, which requests hold them, and room.

A request pins its adapter for its whole life (`acquire` ... `release`): a pinned adapter keeps its slot and its
factors. Adapters no request holds are idle; when a new one needs a slot and the table can grow no more (its slot
count, its byte cap), the least recently used idle one is evicted (it stays loaded and comes back into a slot on its
next use). Unloading an adapter that requests hold lets them finish under it; new requests can no longer name it.

Thread-safe: loads and unloads run beside the engine's step. A table that grows is a new object (`table`), swapped
in whole after it is filled; the runner binds whichever table is current when a call starts.
"""
from __future__ import annotations

import itertools
import logging
import threading
from dataclasses import dataclass, field

from llm_runtime.model_builder.contract import LoraSite

from .lora import LoraAdapter
from .slots import SlotTable, site_bytes

log = logging.getLogger(__name__)
RANK_STEP = 8  # table ranks grow in multiples of this: a rank-16 table takes ranks 9..16 without a new table
_keys = itertools.count(1)  # an adapter's key: one per load, so a name loaded again never reuses cached prompts


class UnknownAdapterError(KeyError):
    """No adapter of that name is loaded."""


class AdapterSlotsFullError(RuntimeError):
    """Every slot holds an adapter that running or waiting requests use, and the table may not grow."""


@dataclass(frozen=True)
class AdapterPin:
    """What a request holds: its adapter's key (the prefix cache's too; 0 for the base) and slot (0: the base)."""

    key: int = 0
    slot: int = 0
    name: str | None = None


BASE = AdapterPin()


@dataclass(eq=False)
class _Entry:
    adapter: LoraAdapter
    key: int = field(default_factory=lambda: next(_keys))
    slot: int = 0  # 0: not in the table now
    pins: int = 0
    used: int = 0  # a tick of the last acquire or release: the LRU order
    unloaded: bool = False


class AdapterRegistry:
    """`sites`: the graph's LoRA sites; `dtype`: its io dtype. The table holds up to `max_slots` adapters in at most
    `max_bytes` (None: no cap)."""

    def __init__(self, sites: tuple[LoraSite, ...], dtype, max_slots: int = 8, max_bytes: int | None = None):
        self.sites, self.max_slots, self.max_bytes = sites, max_slots, max_bytes
        self.table = SlotTable(sites, dtype, 0, 0)
        self._lock = threading.Lock()
        self._names: dict[str, _Entry] = {}
        self._by_slot: dict[int, _Entry] = {}
        self._tick = itertools.count()

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._names)

    def get(self, name: str) -> LoraAdapter:
        with self._lock:
            return self._entry(name).adapter

    def load(self, adapter: LoraAdapter, replace: bool = False) -> None:
        """Register `adapter` under its name and put it in a slot now if there is room (raises
        AdapterMismatchError when it does not fit the graph, ValueError for a name taken unless `replace`)."""
        self.table.check(adapter)
        with self._lock:
            old = self._names.get(adapter.name)
            if old is not None and not replace:
                raise ValueError(f"an adapter named {adapter.name!r} is loaded already")
            if old is not None:
                self._drop(old)
            entry = self._names[adapter.name] = _Entry(adapter)
            try:
                self._place(entry)
            except AdapterSlotsFullError:  # loaded, not resident: it takes a slot on first use
                log.info("adapter %r loaded; no idle slot for it until one frees", adapter.name)

    def unload(self, name: str) -> None:
        """Forget `name`: new requests cannot use it; the requests that hold it finish under it."""
        with self._lock:
            self._drop(self._entry(name))

    def acquire(self, name: str | None) -> AdapterPin:
        """Pin `name` for a request, placing it in a slot if it has none; None is the base model (slot 0)."""
        if name is None:
            return BASE
        with self._lock:
            entry = self._entry(name)
            if not entry.slot:
                self._place(entry)
            entry.pins += 1
            entry.used = next(self._tick)
            return AdapterPin(entry.key, entry.slot, name)

    def release(self, pin: AdapterPin) -> None:
        if pin.key == 0:
            return
        with self._lock:
            entry = self._by_slot.get(pin.slot)
            if entry is None or entry.key != pin.key:
                return
            entry.pins -= 1
            entry.used = next(self._tick)
            if entry.unloaded and entry.pins == 0:
                self._free(entry)

    def _entry(self, name: str) -> _Entry:
        entry = self._names.get(name)
        if entry is None:
            raise UnknownAdapterError(name)
        return entry

    def _drop(self, entry: _Entry) -> None:
        del self._names[entry.adapter.name]
        entry.unloaded = True
        if entry.pins == 0 and entry.slot:
            self._free(entry)

    def _free(self, entry: _Entry) -> None:
        self._by_slot.pop(entry.slot, None)
        entry.slot = 0

    def _place(self, entry: _Entry) -> None:
        """Give `entry` a slot: a free one, else a bigger table, else an idle adapter's (least recently used)."""
        table, rank = self.table, _rank_for(entry.adapter.rank)
        wanted = len(self._by_slot) + 1  # the slots in use and this one
        if wanted > table.slots and len(self._by_slot) < self.max_slots:
            table = self._grown(table, min(max(2 * table.slots, wanted), self.max_slots), rank)
        elif rank > table.rank:
            table = self._grown(table, table.slots, rank)
        free = [s for s in range(1, table.slots + 1) if s not in self._by_slot]
        if not free:
            idle = [e for e in self._by_slot.values() if e.pins == 0]
            if not idle:
                raise AdapterSlotsFullError(f"all {table.slots} adapter slots hold adapters that requests are using")
            victim = min(idle, key=lambda e: e.used)
            log.info("adapter %r evicted from slot %d for %r", victim.adapter.name, victim.slot, entry.adapter.name)
            free = [victim.slot]
            self._free(victim)
        table.write(free[0], entry.adapter)
        entry.slot = free[0]
        self._by_slot[entry.slot] = entry
        self.table = table  # filled before it is seen: a call that binds it finds the slot written

    def _grown(self, table: SlotTable, slots: int, rank: int) -> SlotTable:
        """The table with at least its slots and rank, more of either as asked, within the byte cap."""
        slots, rank = max(slots, table.slots), max(rank, table.rank)
        per_slot = site_bytes(self.sites, rank, table.dtype.itemsize)
        if self.max_bytes is not None:
            slots = min(slots, self.max_bytes // max(per_slot, 1))
            if slots < max(table.slots, 1):
                raise AdapterSlotsFullError(
                    f"{max(table.slots, 1)} adapter slot(s) at rank {rank} take {max(table.slots, 1) * per_slot / 2**20:.1f}"
                    f" MiB, over the adapter memory cap of {self.max_bytes / 2**20:.1f} MiB")
        if (slots, rank) == (table.slots, table.rank):
            return table
        log.info("adapter table: %d slots at rank %d (%.1f MiB)", slots, rank, slots * per_slot / 2**20)
        return table.grown(slots, rank)

    @property
    def nbytes(self) -> int:
        return self.table.nbytes


def _rank_for(rank: int) -> int:
    return max(RANK_STEP, -(-rank // RANK_STEP) * RANK_STEP)
