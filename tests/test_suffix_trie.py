"""The suffix trie: counts of every substring up to its depth, removal that leaves exactly what was there before, the
longest match and the most frequent continuation, and its memory estimate against tracemalloc."""
from __future__ import annotations

import random
import tracemalloc
from pathlib import Path

import pytest

from llm_runtime.speculation.suffix_trie import SuffixTrie


def substrings(seqs: list[list[int]], depth: int) -> dict[tuple, int]:
    counts: dict[tuple, int] = {}
    for s in seqs:
        for i in range(len(s)):
            for j in range(i + 1, min(i + depth, len(s)) + 1):
                counts[tuple(s[i:j])] = counts.get(tuple(s[i:j]), 0) + 1
    return counts


def paths(trie: SuffixTrie) -> dict[tuple, int]:
    out, todo = {}, [((), trie.root)]
    while todo:
        prefix, node = todo.pop()
        for t, child in node.items():
            out[prefix + (t,)] = child.count
            todo.append((prefix + (t,), child))
    return out


def test_counts_are_the_occurrences_of_every_substring_up_to_the_depth():
    r = random.Random(0)
    seqs = [[r.randrange(5) for _ in range(r.randrange(1, 30))] for _ in range(20)]
    trie = SuffixTrie(6)
    for s in seqs:
        trie.insert(s)
    expected = substrings(seqs, 6)
    assert paths(trie) == expected and trie.nodes == len(expected)


def test_removing_sequences_leaves_the_trie_of_the_others_and_prunes_the_rest():
    r = random.Random(1)
    seqs = [[r.randrange(6) for _ in range(r.randrange(1, 40))] for _ in range(30)]
    trie = SuffixTrie(8)
    for s in seqs:
        trie.insert(s)
    kept = seqs[::2]
    for s in seqs[1::2]:
        trie.remove(s)
    assert paths(trie) == substrings(kept, 8) and trie.nodes == len(substrings(kept, 8))
    for s in kept:
        trie.remove(s)
    assert trie.nodes == trie.dicts == trie.entries == 0 and not trie.root.items()


def test_the_longest_match_and_its_most_frequent_continuation():
    trie = SuffixTrie(16)
    for s in ([1, 2, 3, 4, 5, 6], [9, 2, 3, 4, 5, 6], [7, 3, 4, 8, 8]):
        trie.insert(s)
    node, m = trie.match([0, 0, 2, 3, 4], longest=10)
    assert m == 3 and node.count == 2  # "2 3 4", twice; "0 2 3 4" nowhere
    draft, probs = trie.continuation(node, 5, 0.1)
    assert draft == [5, 6] and probs == pytest.approx([2 / 3, 4 / 9])  # 5 6 both times: 2 / (2 + 1) each
    node, m = trie.match([3, 4], longest=10)
    draft, probs = trie.continuation(node, 5, 0.5)
    assert m == 2 and draft == [5] and probs == [0.5]  # 5 after "3 4" two times of three; then 2/3 more: 1/3
    assert trie.continuation(node, 5, 0.6) == ([], [])  # under the threshold: no draft
    assert trie.continuation(node, 1, 0.1)[0] == [5]  # the limit
    assert trie.match([3, 4], longest=10, min_count=4)[1] == 0  # "4" occurs 3 times only


def test_the_memory_estimate_is_within_15_percent_of_tracemalloc():
    """Prose as bytes (branching near the root, chains below) and random tokens from a small vocabulary (dicts
    everywhere): the estimate holds on both."""
    text = Path(__file__).read_bytes()
    r = random.Random(2)
    for seqs in ([list(text[i:i + 400]) for i in range(0, len(text) - 400, 200)],
                 [[r.randrange(4) for _ in range(200)] for _ in range(40)]):
        tracemalloc.start()
        try:
            trie = SuffixTrie(32)
            before = tracemalloc.get_traced_memory()[0]
            for s in seqs:
                trie.insert(s)
            measured = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert 0.85 < trie.nbytes / measured < 1.15, (trie.nbytes, measured)
