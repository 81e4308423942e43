import random
import statistics
import time

import pytest

from llm_runtime.speculation import PromptLookup


def reference_draft(tokens: list[int], k: int, min_n: int, max_n: int) -> list[int]:
    """Brute force: the longest n-gram tail with an earlier occurrence, its latest one, continued cyclically."""
    for n in range(min(max_n, len(tokens)), min_n - 1, -1):
        tail = tokens[len(tokens) - n:]
        for start in range(len(tokens) - n - 1, -1, -1):
            if tokens[start:start + n] == tail:
                ext = list(tokens)
                for i in range(k):
                    ext.append(ext[start + n + i])
                return ext[len(tokens):]
    return []


def test_the_tokens_after_the_matching_ngram_are_the_draft():
    p = PromptLookup([1, 2, 3, 4, 5, 9, 1, 2], min_n=1, max_n=3)
    assert p.propose(3) == [3, 4, 5]
    assert p.propose(1) == [3]
    assert p.propose(0) == []


def test_the_longest_match_wins_over_a_more_recent_shorter_one():
    # (5, 6) occurs at 0 followed by 7; 6 alone occurs later at 4 followed by 8
    p = PromptLookup([5, 6, 7, 1, 6, 8, 2, 5, 6], min_n=1, max_n=3)
    assert p.propose(2) == [7, 1]


def test_the_latest_earlier_occurrence_is_taken():
    p = PromptLookup([1, 2, 3, 0, 1, 2, 4, 0, 1, 2], min_n=1, max_n=3)
    assert p.propose(1) == [4]


def test_a_repeating_pattern_continues_past_the_end():
    assert PromptLookup([7, 7, 7], max_n=2).propose(5) == [7, 7, 7, 7, 7]
    assert PromptLookup([1, 2, 1, 2], max_n=2).propose(5) == [1, 2, 1, 2, 1]


def test_no_match_no_draft_and_min_n_is_respected():
    assert PromptLookup([1, 2, 3, 4]).propose(4) == []
    assert PromptLookup([]).propose(4) == []
    p = PromptLookup([1, 2, 3, 9, 3], min_n=2, max_n=3)  # only the unigram 3 recurs
    assert p.propose(2) == []


def test_bad_ngram_range_is_refused():
    with pytest.raises(ValueError, match="min_n"):
        PromptLookup([1], min_n=3, max_n=2)


@pytest.mark.parametrize("min_n,max_n", [(1, 3), (2, 4), (1, 1)])
def test_incremental_index_equals_brute_force(min_n, max_n):
    rng = random.Random(min_n * 10 + max_n)
    for trial in range(30):
        vocab = rng.choice([3, 6, 20])
        tokens = [rng.randrange(vocab) for _ in range(rng.randrange(1, 40))]
        p = PromptLookup(tokens[:5], min_n, max_n)
        for i in range(5, len(tokens) + 1):
            if i > 5:
                p.extend(tokens[i - 1:i])
            k = rng.randrange(1, 6)
            assert p.propose(k) == reference_draft(tokens[:i], k, min_n, max_n), (tokens[:i], k)


def test_a_step_costs_microseconds_on_a_long_history():
    """extend by one token plus propose 4: well under 1% of a ~4 ms decode step."""
    rng = random.Random(0)
    p = PromptLookup([rng.randrange(2000) for _ in range(2000)], 1, 3)
    times = []
    for _ in range(2000):
        start = time.perf_counter()
        p.extend([rng.randrange(2000)])
        p.propose(4)
        times.append(time.perf_counter() - start)
    assert statistics.median(times) < 40e-6
