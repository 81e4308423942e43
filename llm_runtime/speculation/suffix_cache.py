"""The suffix cache: recent requests' outputs, shared by the rows of one engine as a draft source (SuffixDecoding).

Each finished request stores its output, led in by the last `depth` tokens of its prompt (what the output's first
tokens follow: the chat template's assistant header, the end of an instruction), in a `SuffixTrie`; a decoding row
drafts the continuation of its own recent tokens there (`SuffixLookup`). The prompt's body is left to prompt lookup,
which searches the row's own prompt beside it, as SuffixDecoding keeps a per-request prompt tree beside its global
output tree.

Modes: "global", one trie for every request of the engine; "key", one trie per API key id (a hash the server
derives from the key, never the key), so a key's drafts come only from its own requests; "request", no shared
store: each row's own prompt and output in a trie of its own (freed with the row, bounded by its length).
Verification makes a reply independent of its drafts, so a shared cache passes no text between requests; how
fast a reply comes (its acceptance) does depend on what other requests generated, which is what "key" isolates.

Memory is accounted as the tries' nodes and dicts (`SuffixTrie.nbytes`) plus the stored tokens (4 bytes each) and
a per-sequence overhead, and capped at `max_bytes`: adding a sequence evicts the least recently added ones until the total fits again (a
text generated again is added again, so frequent text stays); one that does not fit alone is evicted last, so the
cap is exceeded only while a sequence is being added.
"""
from __future__ import annotations

import itertools
from array import array
from collections import OrderedDict
from collections.abc import Sequence

from .suffix_trie import SuffixTrie

MODES = ("request", "global", "key")
SEQUENCE_BYTES = 200  # a stored sequence's entry in the eviction order (tuple, key, ordered-dict links, array header)


class SuffixCache:
    """One engine's store of recent outputs, partitioned by key id ("" in global mode), under a memory cap."""

    def __init__(self, mode: str = "global", max_bytes: int = 64 << 20, depth: int = 32):
        if mode not in MODES:
            raise ValueError(f"suffix cache mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode, self.max_bytes, self.depth = mode, max_bytes, depth
        self.tries: dict[str, SuffixTrie] = {}  # partition -> its trie
        self.stored: OrderedDict[int, tuple[str, array]] = OrderedDict()  # oldest first
        self._ids = itertools.count()
        self.trie_bytes = self.tokens = 0

    @property
    def nbytes(self) -> int:
        """The accounted memory of what is stored."""
        return self.trie_bytes + 4 * self.tokens + SEQUENCE_BYTES * len(self.stored)

    def partition(self, key: str) -> str:
        """Which trie a request with API key id `key` reads and adds to."""
        return key if self.mode == "key" else ""

    def trie(self, partition: str) -> SuffixTrie | None:
        return self.tries.get(partition)

    def add(self, partition: str, tokens: Sequence[int]) -> None:
        """Store a sequence, then evict the oldest until the cap holds again (this one last: one over the cap alone
        is not kept)."""
        if not tokens:
            return
        stored = array("i", tokens)
        trie = self.tries.setdefault(partition, SuffixTrie(self.depth))
        before = trie.nbytes
        trie.insert(stored)
        self.trie_bytes += trie.nbytes - before
        self.tokens += len(stored)
        self.stored[next(self._ids)] = (partition, stored)
        while self.nbytes > self.max_bytes:
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        _, (partition, tokens) = self.stored.popitem(last=False)
        trie = self.tries[partition]
        before = trie.nbytes
        trie.remove(tokens)
        self.trie_bytes -= before - trie.nbytes
        self.tokens -= len(tokens)
        if trie.nodes == 0:
            del self.tries[partition]

