"""A depth-capped suffix trie with occurrence counts: the index SuffixDecoding (Oliaro et al., NeurIPS 2025) drafts from.

Every suffix of every stored token sequence is a path from the root, cut at `depth` tokens, and each node counts the
occurrences of the substring it spells. So every substring of at most `depth` tokens of the stored text is a path,
and a node's children's counts are the frequencies of the tokens that followed it. A sequence is added one token at
a time (the paths ending at its last token each grow by one child: `depth` dict lookups per token) and removed whole
(its paths decremented; a node whose count reaches zero is pruned together with the rest of its path, which is all
that hangs below it: a child never counts more than its parent).

Drafting: `match` finds the longest suffix of the context that is a path (a binary search: every shorter suffix of a
path is a path too), `continuation` walks from its node to the most frequent child while the product of the
conditional frequencies (each count over its siblings' total plus one) stays at or above `min_prob`: a frequent
continuation drafts far; one seen once, or an ambiguous one, little or nothing.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

# The memory of a trie, fitted with tracemalloc on CPython 3.11 (x86-64) over BPE-tokenized prose, bytes, JSON and
# random tokens from 4 and 1,000 ids, depth 32; the estimate came out 1-4% over the measurement on each, and
# tests/test_suffix_trie.py checks it stays within 15%: a node (an object with four slots), a dict (a node's once
# it has two children or more) and an entry of such a dict.
NODE_BYTES = 66
DICT_BYTES = 160
ENTRY_BYTES = 28


class Node:
    """A substring's occurrence count and the tokens that followed it: one child in two slots (most nodes of a
    depth-capped trie over text have one or none), a dict from the second on."""

    __slots__ = ("child", "children", "count", "token")

    def __init__(self):
        self.count = 0
        self.token, self.child = -1, None  # the only child and its token, while there is one
        self.children: dict[int, Node] | None = None  # token -> node, from the second child on

    def get(self, token: int) -> Node | None:
        if self.children is not None:
            return self.children.get(token)
        return self.child if self.token == token else None

    def add(self, token: int) -> Node:
        node = Node()
        if self.children is not None:
            self.children[token] = node
        elif self.child is None:
            self.token, self.child = token, node
        else:
            self.children, self.token, self.child = {self.token: self.child, token: node}, -1, None
        return node

    def drop(self, token: int) -> None:
        if self.children is None:
            self.token, self.child = -1, None
            return
        del self.children[token]
        if len(self.children) == 1:
            ((self.token, self.child),), self.children = self.children.items(), None

    def items(self):
        """(token, child) pairs."""
        if self.children is not None:
            return self.children.items()
        return () if self.child is None else ((self.token, self.child),)


class SuffixTrie:
    """Substrings of up to `depth` tokens of the stored sequences, with their occurrence counts."""

    def __init__(self, depth: int):
        self.depth = depth
        self.root = Node()
        self.nodes = 0  # below the root
        self.dicts = self.entries = 0  # nodes holding a children dict, and the children held in dicts

    @property
    def nbytes(self) -> int:
        """The memory its nodes and dicts take, by the per-item estimates above."""
        return self.nodes * NODE_BYTES + self.dicts * DICT_BYTES + self.entries * ENTRY_BYTES

    def append(self, paths: list[Node], token: int) -> list[Node]:
        """Add `token` after a sequence whose open paths (the nodes of its last 1, 2, ... depth - 1 tokens) are
        `paths`; returns the open paths after it, lengths 1..depth."""
        grown = []
        for node in [self.root, *paths[:self.depth - 1]]:
            child = node.get(token)
            if child is None:
                if node.children is not None:
                    self.entries += 1
                elif node.child is not None:  # its second child: a dict of two
                    self.dicts, self.entries = self.dicts + 1, self.entries + 2
                child = node.add(token)
                self.nodes += 1
            child.count += 1
            grown.append(child)
        return grown

    def insert(self, tokens: Iterable[int]) -> None:
        """Add a whole sequence."""
        paths: list[Node] = []
        for t in tokens:
            paths = self.append(paths, t)

    def remove(self, tokens: Sequence[int]) -> None:
        """Take back a sequence `insert` added (the same tokens): its counts are decremented, empty nodes pruned."""
        for i in range(len(tokens)):
            node = self.root
            path = tokens[i:i + self.depth]
            for j, t in enumerate(path):
                child = node.get(t)
                child.count -= 1
                if child.count == 0:  # so is every node below it on this path, and nothing else hangs there
                    if node.children is not None:
                        two = len(node.children) == 2  # back to one child, in slots
                        self.dicts, self.entries = self.dicts - two, self.entries - 1 - two
                    node.drop(t)
                    self.nodes -= len(path) - j
                    break
                node = child

    def find(self, tokens: Sequence[int]) -> Node | None:
        """The node the tokens spell from the root, or None."""
        node = self.root
        for t in tokens:
            if (node := node.get(t)) is None:
                return None
        return node

    def match(self, context: Sequence[int], longest: int, min_count: int = 1) -> tuple[Node, int]:
        """The node of the longest suffix of `context` (at most `longest` tokens) that is a path counted at least
        `min_count` times, and its length (0: the root). A binary search: a suffix of a path is a path counted
        at least as often."""
        lo, hi, best, end = 0, min(longest, len(context), self.depth), self.root, len(context)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            node = self.find(context[end - mid:])
            if node is None or node.count < min_count:
                hi = mid - 1
            else:
                lo, best = mid, node
        return best, lo

    @staticmethod
    def continuation(node: Node, limit: int, min_prob: float) -> tuple[list[int], list[float]]:
        """Up to `limit` tokens down the most frequent children from `node` while the path's probability stays
        >= `min_prob`; and each draft's path probability, the chance that it and those before it are accepted by
        the stored counts: the product of each child's count over its siblings' total plus one (a continuation
        seen once is an even bet; one seen in 20 of 20 replies, 0.95). Their sum is SuffixDecoding's score, the
        expected number of drafts accepted."""
        draft, p, probs = [], 1.0, []
        while len(draft) < limit and (node.child is not None or node.children is not None):
            total, token, best = 0, -1, None
            for t, child in node.items():
                total += child.count
                if best is None or child.count > best.count:
                    token, best = t, child
            p *= best.count / (total + 1)
            if p < min_prob:
                break
            draft.append(token)
            probs.append(p)
            node = best
        return draft, probs
