"""Scheduler behaviour without a model: budgets, chunking, admission, cancellation, slot reuse."""
import numpy as np
import pytest

from llm_runtime.engine.config import EngineConfig
from llm_runtime.engine.prefix import find_donor
from llm_runtime.engine.prompt_split import MIN_SHARED, prefill_chunk
from llm_runtime.engine.scheduler import QueueFullError, Scheduler
from llm_runtime.engine.sequence import Sequence, Status
from llm_runtime.kv_cache import KVCache
from llm_runtime.sampling.params import SamplingParams


def make(slots=4, budget=16, chunk=8, max_waiting=8, max_bytes=None):
    cache = KVCache(2, 1, 16, np.float32, slots=slots, capacity=16, max_bytes=max_bytes)
    return Scheduler(cache, EngineConfig(max_concurrency=slots, max_waiting=max_waiting, token_budget=budget, chunk_size=chunk)), cache


def seq(n, max_tokens=4):
    return Sequence(list(range(1, n + 1)), SamplingParams(max_tokens=max_tokens))


def advance(plan):
    """What the engine does after a step: the fed tokens are now cached; a sampled token waits to be fed."""
    for item in plan:
        sampled = item.wants_logits
        item.seq.cached += len(item.tokens)
        if sampled:
            item.seq.next_token = 99


def prefill_plans(s: Scheduler, x: Sequence) -> list[list]:
    """Add `x` alone and schedule until its prompt is cached; the plans of those steps."""
    s.add(x)
    plans = []
    while x.prefilling:
        plans.append(s.schedule())
        advance(plans[-1])
    return plans


def test_long_prompt_is_chunked_within_budget():
    s, _ = make(budget=16, chunk=8)
    plans = prefill_plans(s, seq(20))
    assert [[len(p.tokens) for p in plan] for plan in plans] == [[8], [8], [4]]
    assert not any(p.wants_logits for plan in plans for p in plan[:-1])
    assert s.schedule()[0].tokens == [99]  # then it decodes


def test_decodes_come_first_and_a_long_prompt_never_stalls_them():
    s, _ = make(budget=10, chunk=8)
    a = seq(3)
    s.add(a)
    advance(s.schedule())  # a's whole prompt
    s.add(seq(40))
    for _ in range(4):
        plan = s.schedule()
        assert plan[0].seq is a and plan[0].tokens == [99]  # a decodes every step
        assert sum(len(p.tokens) for p in plan) <= 10
        advance(plan)


def test_admission_is_bounded_by_slots_and_the_queue():
    s, cache = make(slots=2, max_waiting=3)
    for _ in range(3):
        s.add(seq(2))
    with pytest.raises(QueueFullError):
        s.add(seq(2))
    plan = s.schedule()
    assert len(plan) == 2 and len(s.running) == 2 and len(s.waiting) == 1
    assert sorted(p.seq.slot for p in plan) == [0, 1] and cache.free_slots == 0


def test_finish_frees_the_slot_at_once_and_slots_are_reused_lowest_first():
    s, cache = make(slots=3)
    xs = [seq(2) for _ in range(3)]
    for x in xs:
        s.add(x)
    advance(s.schedule())
    s.finish(xs[1])
    assert xs[1].status is Status.FINISHED and cache.free_slots == 1
    y = seq(2)
    s.add(y)
    s.schedule()
    assert y.slot == 1


def test_cancel_a_waiting_sequence():
    s, _ = make(slots=1)
    a, b = seq(2), seq(2)
    s.add(a)
    s.add(b)
    s.schedule()
    s.finish(b)  # still waiting
    assert not s.waiting and b.status is Status.FINISHED


def test_memory_cap_holds_requests_back_until_they_fit():
    # 2 layers * 1 head * 16 dims * 4 bytes * 2 (k, v) = 256 bytes per token and slot; 2 slots
    s, cache = make(slots=2, max_bytes=256 * 2 * 256)
    s.add(seq(10, max_tokens=200))  # needs 256 tokens of capacity: fits exactly
    s.add(seq(10, max_tokens=300))  # would need 512: held back
    plan = s.schedule()
    assert len(plan) == 1 and len(s.waiting) == 1


def sharing(prefix: int, tail: int, length: int = 4) -> Sequence:
    """A prompt of `prefix` shared tokens, then `length` tokens of its own."""
    return Sequence(list(range(1, prefix + 1)) + [1000 + tail] * length, SamplingParams(max_tokens=4))


def test_a_shared_prompt_prefix_is_copied_from_the_running_sequence_not_computed_again():
    s, cache = make(budget=64, chunk=64)
    a, b = sharing(20, 1), sharing(20, 2)
    s.add(a)
    s.add(b)
    plan = s.schedule()
    assert [p.seq for p in plan] == [a] and s.waiting[0] is b  # b waits while a computes the prefix
    for buf in cache.buffers:  # what the graph writes for a's 24 prompt tokens
        buf[a.slot, :, :24] = np.arange(24, dtype=np.float32)[None, :, None] + 100 * a.slot + 1
    advance(plan)
    plan = s.schedule()
    assert [(p.seq, p.tokens) for p in plan] == [(a, [99]), (b, b.prompt_ids[20:])]  # b computes only its own part
    assert b.cached == 20 and cache.lengths[b.slot] == 20 and s.reused_tokens == 20
    for buf in cache.buffers:
        assert np.array_equal(buf[b.slot, :, :20], buf[a.slot, :, :20])
        assert not buf[b.slot, :, 20:].any()  # a's own tokens are not copied


def test_an_identical_prompt_still_computes_its_last_two_tokens():
    s, _ = make(budget=64, chunk=64)
    a, b = sharing(20, 1), sharing(20, 1)
    s.add(a)
    advance(s.schedule())
    s.add(b)
    plan = s.schedule()
    assert plan[1].seq is b and plan[1].tokens == b.prompt_ids[-2:] and plan[1].wants_logits


def test_a_short_common_prefix_is_computed_without_waiting():
    s, _ = make(budget=64, chunk=64)
    a, b = sharing(MIN_SHARED - 1, 1), sharing(MIN_SHARED - 1, 2)
    s.add(a)
    s.add(b)
    assert [p.seq for p in s.schedule()] == [a, b] and b.cached == 0 and s.reused_tokens == 0


def test_a_donor_that_finishes_early_leaves_the_waiting_sequence_to_compute_the_prefix():
    s, _ = make(budget=64, chunk=8)
    a, b = sharing(30, 1), sharing(30, 2)
    s.add(a)
    s.add(b)
    advance(s.schedule())  # a has 8 of the 30 shared tokens; b waits
    s.finish(a)  # cancelled
    plan = s.schedule()
    assert [p.seq for p in plan] == [b] and b.cached == 0


def test_window_sized_caches_share_no_prefixes():
    cache = KVCache(2, 1, 16, np.float32, slots=2, capacity=16, windows={0: 8})
    s = Scheduler(cache, EngineConfig(max_concurrency=2, max_waiting=8, token_budget=64, chunk_size=64))
    a, b = sharing(20, 1), sharing(20, 2)
    s.add(a)
    s.add(b)
    assert [p.seq for p in s.schedule()] == [a, b] and not cache.copies_slots


def test_the_donor_holds_the_longest_shared_prefix_then_the_most_of_it_ready():
    short, long = sharing(20, 1), sharing(30, 1)
    (short.slot, short.cached), (long.slot, long.cached) = (0, 24), (1, 10)
    d = find_donor(sharing(30, 2), [short, long], {})
    assert (d.slot, d.shared, d.ready, d.free) == (1, 30, 10, False)
    d = find_donor(sharing(30, 2), [short, long], {3: (0, sharing(30, 1).prompt_ids)})
    assert (d.slot, d.shared, d.ready, d.free) == (3, 30, 30, True)  # a finished sequence's slot, all ready


def finished(s: Scheduler, cache: KVCache, x: Sequence) -> None:
    """Run `x` through its prompt and one decode, mark its cache rows, and finish it."""
    s.add(x)
    for _ in range(2):  # the prompt (samples 99), then one decode (feeds 99, samples 99)
        advance(s.schedule())
    for buf in cache.buffers:
        buf[x.slot, :, :x.cached] = 1.0 + x.slot
    s.finish(x)


def test_a_finished_sequences_slot_keeps_its_tokens_for_the_next_turn():
    s, cache = make(slots=3, budget=64, chunk=64)
    a = sharing(20, 1)
    finished(s, cache, a)
    assert s.retained == {a.slot: (0, a.prompt_ids)} and cache.free_slots == 3  # the prompt, not the fed output
    turn = Sequence(a.prompt_ids + [99, 99, 7, 8], SamplingParams(max_tokens=4))  # the history, then a new message
    s.add(turn)
    plan = s.schedule()
    assert turn.slot == a.slot and turn.cached == 24 and plan[0].tokens == [99, 99, 7, 8]
    assert s.reused_tokens == 24 and not s.retained and cache.lengths[turn.slot] == 24
    for buf in cache.buffers:
        assert (buf[turn.slot, :, :24] == 1.0 + a.slot).all()  # taken in place, not copied


def test_new_sequences_take_unretained_slots_first():
    s, cache = make(slots=2, budget=64, chunk=64)
    a = sharing(20, 1)
    finished(s, cache, a)
    other = seq(4)
    s.add(other)
    s.schedule()
    assert other.slot != a.slot and a.slot in s.retained
    last = seq(5)
    s.add(last)
    s.schedule()
    assert last.slot == a.slot and not s.retained  # the only free slot: its tokens are given up


def test_a_prompt_chunk_is_never_one_token_of_a_longer_prompt():
    s, _ = make(budget=16, chunk=8)
    plans = prefill_plans(s, seq(17))
    assert [[len(p.tokens) for p in plan] for plan in plans] == [[8], [7], [2]]  # 8 + 8 would leave one token for a call of its own


@pytest.mark.parametrize("remaining, limit, want", [(1, 8, 1), (5, 8, 5), (9, 8, 7), (10, 8, 8), (3, 2, 0),
                                                    (5, 1, 0), (4, 2, 2)])
def test_prefill_chunk(remaining, limit, want):
    assert prefill_chunk(remaining, limit) == want
