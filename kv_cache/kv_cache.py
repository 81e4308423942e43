"""Preallocated key/value buffers bound as both past input and present output.

One buffer per layer and per key/value: [slots, kv_heads, capacity, head_dim]. Each sequence owns a
slot (a row); a step binds a run of consecutive slots (contiguous: the slot is the outermost axis), so no copy
happens per step. Capacity grows with the longest sequence and the slot count with the number of sequences
(doubling up to `max_slots`): a lone stream holds one slot's memory.
GroupQueryAttention writes each row's new keys/values in place at that row's own offset. Layers with a
window-sized cache (sliding-window layers) keep a fixed [slots, kv_heads, window + slack, head_dim] buffer
that the op compacts in place; only the full-length layers grow.
"""
from __future__ import annotations

import numpy as np

from .memory import DeviceMemory, HostMemory


class CacheFullError(MemoryError):
    """A request needs more cache memory than the configured cap allows."""


WINDOW_SLACK = 64  # rows above the window on the host: the op compacts once per slack + 1 steps


def round_up(n: int, multiple: int = 256) -> int:
    return max(multiple, -(-n // multiple) * multiple)


class KVCache:
    def __init__(self, num_layers: int, kv_heads: int, head_dim: int, dtype, slots: int, capacity: int,
                 device: str = "cpu", device_id: int = 0, max_bytes: int | None = None, max_capacity: int | None = None,
                 windows: dict[int, int] | None = None, memory: HostMemory | DeviceMemory | None = None,
                 max_slots: int | None = None):
        self.num_layers, self.kv_heads, self.head_dim = num_layers, kv_heads, head_dim
        # layer -> rows of its window-sized buffer (CUDA's kernel needs exactly the window)
        slack = WINDOW_SLACK if device == "cpu" else 0
        self.window_rows = {layer: w + slack for layer, w in (windows or {}).items()}
        self.dtype = np.dtype(dtype)
        self.slots = slots
        self.max_slots = max(max_slots or slots, slots)  # slots double up to this when all are taken
        self.max_bytes = max_bytes
        self.max_capacity = max_capacity
        self.memory = memory or (HostMemory() if device == "cpu" else DeviceMemory(device, device_id))
        self.lengths = np.zeros(slots, np.int64)  # tokens held per slot
        self._free = list(range(slots - 1, -1, -1))  # lowest slot first keeps the bound prefix short
        self.version = 0  # bumped on every reallocation, so bindings know to refresh
        self.capacity = 0
        self.buffers: list = []
        self._allocate(capacity, slots)

    def nbytes_for(self, capacity: int, slots: int) -> int:
        """Bytes of the whole cache at this capacity and slot count."""
        window = 2 * sum(self.window_rows.values()) * slots * self.kv_heads * self.head_dim * self.dtype.itemsize
        return self.bytes_per_token * slots * capacity + window

    @property
    def slots_after_allocation(self) -> int:
        """How many slots the cache has once one more is given out (all taken: the count doubles, to max_slots)."""
        return self.slots if self._free else min(self.max_slots, 2 * self.slots)

    @property
    def bytes_per_token(self) -> int:
        """Cache bytes one more token of capacity costs in one slot (the full-length layers, keys and values)."""
        return 2 * (self.num_layers - len(self.window_rows)) * self.kv_heads * self.head_dim * self.dtype.itemsize

    @property
    def window_bytes(self) -> int:
        """Fixed bytes of the window-sized buffers, all slots."""
        return 2 * sum(self.window_rows.values()) * self.slots * self.kv_heads * self.head_dim * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.bytes_per_token * self.slots * self.capacity + self.window_bytes

    def rows_of(self, index: int) -> int:
        """Sequence rows of buffer `index` (2 * layer + 0 for keys, + 1 for values)."""
        return self.window_rows.get(index // 2, self.capacity)

    def shape(self, rows: int, index: int = 0) -> tuple[int, int, int, int]:
        return (rows, self.kv_heads, self.rows_of(index), self.head_dim)

    def _allocate(self, capacity: int, slots: int) -> None:
        """(Re)allocate every buffer at this capacity and slot count, keeping what the old ones hold."""
        if self.max_capacity:
            capacity = min(capacity, self.max_capacity)
        need = self.nbytes_for(capacity, slots)
        if self.max_bytes is not None and need > self.max_bytes:
            raise CacheFullError(f"the KV cache would need {need / 2**20:.1f} MiB "
                                 f"({slots} slots x {capacity} tokens), over the cap of {self.max_bytes / 2**20:.1f} MiB")
        old, old_cap, old_slots = self.buffers, self.capacity, self.slots
        self.capacity, self.slots = capacity, slots
        self.buffers = []
        for i in range(2 * self.num_layers):
            window = i // 2 in self.window_rows
            if old and window and slots == old_slots:
                self.buffers.append(old[i])  # window-sized: never grows
                continue
            self.buffers.append(self.memory.allocate((slots, self.kv_heads, self.rows_of(i), self.head_dim), self.dtype))
            if old:
                self.memory.copy_prefix(self.buffers[i], old[i], self.rows_of(i) if window else old_cap)
        if slots > old_slots:
            self.lengths = np.concatenate([self.lengths, np.zeros(slots - old_slots, np.int64)])
            self._free = sorted(self._free + list(range(old_slots, slots)), reverse=True)
        self.version += 1

    def ensure_capacity(self, tokens: int) -> None:
        """Make room for `tokens` per slot, growing by reallocate-and-copy when needed."""
        if tokens > self.capacity:
            if self.max_capacity and tokens > self.max_capacity:
                raise CacheFullError(f"{tokens} tokens exceed the cache's maximum of {self.max_capacity}")
            grown = round_up(max(tokens, self.capacity * 3 // 2))
            if self.max_bytes is not None and self.nbytes_for(grown, self.slots) > self.max_bytes:
                grown = round_up(tokens)  # no headroom under the cap: just what was asked for
            self._allocate(grown, self.slots)

    @property
    def copies_slots(self) -> bool:
        """Whether `copy_slot_prefix` is available: host buffers without window-sized layers (a window buffer is
        compacted in place by the op, so its rows are not positions)."""
        return isinstance(self.memory, HostMemory) and not self.window_rows

    def copy_slot_prefix(self, src: int, dst: int, tokens: int) -> None:
        """Slot `dst` starts with the first `tokens` cached positions of slot `src` (a shared prompt prefix)."""
        if not self.copies_slots:
            raise ValueError("copying between slots needs host buffers without window-sized layers")
        for buf in self.buffers:  # [slots, kv_heads, capacity, head_dim]
            buf[dst, :, :tokens] = buf[src, :, :tokens]
        self.lengths[dst] = tokens

    def allocate_slot(self, avoid=()) -> int:
        """The lowest free slot not in `avoid` (slots whose contents are worth keeping), else the lowest free slot.
        When every slot is taken, or every free one is worth keeping, the slot count doubles (up to `max_slots`;
        in the second case only within `max_bytes`, else a kept slot is given out)."""
        grown = min(self.max_slots, 2 * self.slots)
        keeping = bool(self._free) and all(s in avoid for s in self._free)
        if grown > self.slots and (not self._free or keeping and (
                self.max_bytes is None or self.nbytes_for(self.capacity, grown) <= self.max_bytes)):
            self._allocate(self.capacity, grown)
        if not self._free:
            raise CacheFullError("no free cache slot")
        slot = next((s for s in reversed(self._free) if s not in avoid), self._free[-1])
        return self.take_slot(slot)

    def take_slot(self, slot: int) -> int:
        """Allocate this free slot (its buffer rows are left as they are)."""
        self._free.remove(slot)
        self.lengths[slot] = 0
        return slot

    def free_slot(self, slot: int) -> None:
        self.lengths[slot] = 0
        self._free.append(slot)
        self._free.sort(reverse=True)

    @property
    def free_slots(self) -> int:
        return len(self._free)

    def key(self, layer: int):
        return self.buffers[2 * layer]

    def value(self, layer: int):
        return self.buffers[2 * layer + 1]

    def pointer(self, index: int, slot: int = 0) -> int:
        """Address of buffer `index` from `slot` on: the slot is the outermost axis, so any run of slots is contiguous."""
        return self.memory.pointer(self.buffers[index]) + slot * self.kv_heads * self.rows_of(index) * self.head_dim * self.dtype.itemsize
