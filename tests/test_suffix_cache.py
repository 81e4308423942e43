"""The suffix cache's bounds (memory cap, oldest-first eviction, nothing too big stored), its partitions by API key
id, and a row's lookup in each mode."""
from __future__ import annotations

import random

import pytest

from llm_runtime.errors import ParameterError
from llm_runtime.speculation import SpeculationConfig
from llm_runtime.speculation.suffix_cache import SuffixCache
from llm_runtime.speculation.suffix_lookup import SuffixLookup


def reply(r: random.Random, n: int = 40) -> list[int]:
    return [r.randrange(1000) for _ in range(n)]


def test_the_cap_holds_and_the_oldest_sequences_go_first():
    r = random.Random(0)
    one = SuffixCache(max_bytes=1 << 30)
    one.add("", reply(r))
    cap = int(one.nbytes * 5.5)  # about five replies of this size
    cache = SuffixCache(max_bytes=cap)
    replies = [reply(r) for _ in range(20)]
    for i, s in enumerate(replies):
        cache.add("", s)
        assert cache.nbytes <= cap
        assert len(cache.stored) == min(i + 1, 5)
    kept = [list(tokens) for _, tokens in cache.stored.values()]
    assert kept == replies[-5:]  # the five most recent
    trie = cache.trie("")
    assert trie.find(replies[-1][:8]) is not None and trie.find(replies[0][:8]) is None  # evicted: pruned


def test_eviction_frees_the_accounted_memory_entirely():
    r = random.Random(1)
    cache = SuffixCache(max_bytes=1 << 30)
    for _ in range(10):
        cache.add("", reply(r))
    while cache.stored:
        cache._evict_oldest()
    assert cache.nbytes == 0 and cache.tries == {}


def test_a_sequence_that_cannot_fit_alone_is_not_kept():
    cache = SuffixCache(max_bytes=10_000, depth=32)
    cache.add("", list(range(3)))
    cache.add("", list(range(500)))
    assert not cache.stored and cache.nbytes == 0 and cache.tries == {}
    cache.add("", list(range(3)))
    assert len(cache.stored) == 1 and cache.nbytes <= 10_000


def test_key_mode_keeps_each_keys_replies_to_itself():
    cache = SuffixCache("key")
    text = [5, 6, 7, 8, 9, 10, 11, 12]
    alice = SuffixLookup(cache, [1, 2, 5, 6], key="alice")
    alice.extend(text[2:])
    cache.add(alice.partition, alice.stored())
    assert SuffixLookup(cache, [3, 5, 6, 7], key="alice").propose(4) == [8, 9, 10]  # as long as the match
    assert SuffixLookup(cache, [3, 5, 6, 7], key="bob").propose(4) == []
    assert SuffixLookup(cache, [3, 5, 6, 7]).propose(4) == []  # no key is a partition of its own
    shared = SuffixCache("global")
    shared.add(shared.partition("alice"), alice.stored())
    assert SuffixLookup(shared, [3, 5, 6, 7], key="bob").propose(4) == [8, 9, 10]


def test_a_row_drafts_what_followed_its_lead_in_in_earlier_replies():
    cache = SuffixCache("global")
    header = [100, 101, 102]  # the template's assistant header, the end of every prompt
    for prompt_body, out in ((7, [40, 41, 42, 43, 44]), (8, [40, 41, 42, 43, 45]), (9, [40, 41, 42, 43, 44])):
        row = SuffixLookup(cache, [prompt_body, *header])
        row.extend(out)
        cache.add(row.partition, row.stored())
    row = SuffixLookup(cache, [6, *header])
    assert row.lookup(8)[:2] == ([40, 41, 42], 3)  # at most the match's length (SPEC_FACTOR 1)
    row.extend([40, 41, 42])
    assert row.lookup(8)[:2] == ([43, 44], 6)  # 44 followed 2 times of 3: 0.75 * 2 / 4 >= MIN_PROB


def test_request_mode_drafts_from_the_rows_own_earlier_text_only():
    cache = SuffixCache("request")
    row = SuffixLookup(cache, [1, 2, 3, 4, 9, 1, 2])
    assert row.lookup(4)[:2] == ([3, 4], 2)  # "1 2" occurred before, followed by 3 4 (its own occurrence at the end has
    row.extend([3])  # no continuation yet)
    assert row.propose(4) == [4, 9, 1]
    assert SuffixLookup(cache, [1, 2]).propose(4) == []  # nothing shared between rows
    assert cache.nbytes == 0


@pytest.mark.parametrize("kwargs,param", [({"suffix_cache": "user"}, "suffix_cache"),
                                          ({"suffix_cache_mb": 0}, "suffix_cache_mb"),
                                          ({"suffix_depth": 4}, "suffix_depth")])
def test_bad_suffix_settings_name_their_parameter(kwargs, param):
    with pytest.raises(ParameterError) as e:
        SpeculationConfig("suffix", **kwargs)
    assert e.value.param == param


def test_each_engine_gets_a_store_of_its_own_only_with_method_suffix():
    config = SpeculationConfig("suffix", suffix_cache="key", suffix_cache_mb=8)
    a, b = config.suffix_store(), config.suffix_store()
    assert a is not b and a.mode == "key" and a.max_bytes == 8 << 20
    assert SpeculationConfig("ngram").suffix_store() is None


def test_the_verified_prefix_is_the_one_that_pays_best():
    from llm_runtime.speculation.policy import best_prefix

    assert best_prefix([0.99] * 8, batch=1) == 8  # a certain continuation: all of it
    assert best_prefix([0.5, 0.25, 0.125], batch=1) == 1  # an even bet pays for one token alone
    assert best_prefix([0.5, 0.25, 0.125], batch=16) == 0  # not beside 15 other rows
    assert best_prefix([], batch=1) == 0
