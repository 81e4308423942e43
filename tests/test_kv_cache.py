"""KVCache on its own: memory arithmetic, slot bookkeeping, growth and caps (no model needed)."""
import numpy as np
import pytest

from llm_runtime.kv_cache import CacheFullError, KVCache, round_up

# SmolLM2-135M's shape: 30 layers, 3 kv heads of 64
LAYERS, KV_HEADS, HEAD_DIM = 30, 3, 64


def small(slots=2, capacity=8, **kw) -> KVCache:
    return KVCache(2, 2, 4, np.float32, slots=slots, capacity=capacity, **kw)


@pytest.mark.parametrize("dtype, per_token", [(np.float32, 46080), (np.float16, 23040)])
def test_bytes_per_token(dtype, per_token):
    cache = KVCache(LAYERS, KV_HEADS, HEAD_DIM, dtype, slots=3, capacity=256)
    assert cache.bytes_per_token == 2 * LAYERS * KV_HEADS * HEAD_DIM * np.dtype(dtype).itemsize == per_token
    assert cache.nbytes == per_token * 3 * 256
    assert sum(b.nbytes for b in cache.buffers) == cache.nbytes
    assert len(cache.buffers) == 2 * LAYERS
    assert cache.key(1) is cache.buffers[2] and cache.value(1) is cache.buffers[3]


def test_shape_and_slot_rows_share_one_buffer():
    cache = small(slots=3, capacity=8)
    assert cache.buffers[0].shape == (3, 2, 8, 4)
    assert cache.shape(2) == (2, 2, 8, 4)
    # a step over the first rows binds a prefix of the buffer: row r starts r rows further on
    row = 2 * 8 * 4 * 4
    assert cache.buffers[0][1].ctypes.data == cache.pointer(0) + row
    assert cache.buffers[0][:2].flags.c_contiguous


def test_round_up():
    assert round_up(0) == round_up(1) == round_up(256) == 256
    assert round_up(257) == 512
    assert round_up(5, 4) == 8


def test_slots_lowest_first_and_reused():
    cache = small(slots=3)
    assert cache.free_slots == 3
    assert [cache.allocate_slot() for _ in range(3)] == [0, 1, 2]
    assert cache.free_slots == 0
    with pytest.raises(CacheFullError, match="no free cache slot"):
        cache.allocate_slot()
    cache.lengths[:] = [5, 6, 7]
    cache.free_slot(2)
    cache.free_slot(0)
    assert cache.lengths.tolist() == [0, 6, 0]
    assert cache.allocate_slot() == 0  # lowest first, whatever the order of freeing
    cache.free_slot(1)
    assert [cache.allocate_slot(), cache.allocate_slot()] == [1, 2]


def test_allocated_slot_starts_empty():
    cache = small(slots=1)
    slot = cache.allocate_slot()
    cache.lengths[slot] = 9
    cache.free_slot(slot)
    assert cache.allocate_slot() == slot and cache.lengths[slot] == 0


def test_growth_keeps_the_prefix_and_bumps_version():
    cache = small(slots=2, capacity=8)
    rng = np.random.default_rng(0)
    before = [rng.standard_normal(b.shape).astype(np.float32) for b in cache.buffers]
    for b, v in zip(cache.buffers, before):
        b[...] = v
    version, old_ptr = cache.version, cache.pointer(0)
    cache.ensure_capacity(8)  # already fits: nothing moves
    assert cache.version == version and cache.pointer(0) == old_ptr
    cache.ensure_capacity(9)
    assert cache.version == version + 1
    assert cache.capacity == 256  # rounded up, at least 1.5x
    assert cache.shape(2) == (2, 2, 256, 4)
    for b, v in zip(cache.buffers, before):
        assert b.shape == (2, 2, 256, 4)
        np.testing.assert_array_equal(b[:, :, :8], v)
        assert not b[:, :, 8:].any()
    cache.ensure_capacity(257)
    assert (cache.capacity, cache.version) == (512, version + 2)  # max(257, 1.5 * 256) rounded up
    for b, v in zip(cache.buffers, before):
        np.testing.assert_array_equal(b[:, :, :8], v)


def test_max_bytes_cap_on_creation():
    per_token = 2 * 2 * 2 * 4 * 4
    with pytest.raises(CacheFullError) as err:
        small(slots=2, capacity=8192, max_bytes=1024 * 1024)
    msg = str(err.value)
    assert per_token * 2 * 8192 == 2 * 2**20
    assert "2.0 MiB" in msg and "2 slots x 8192 tokens" in msg and "cap of 1.0 MiB" in msg
    assert isinstance(err.value, MemoryError)


def test_max_bytes_cap_on_growth_leaves_the_cache_usable():
    per_token = 2 * 2 * 2 * 4 * 4
    cache = small(slots=1, capacity=8, max_bytes=per_token * 300)
    cache.buffers[0][...] = 1.0
    cache.ensure_capacity(200)  # 256 tokens fit under 300
    assert cache.capacity == 256
    version, buffers = cache.version, list(cache.buffers)
    with pytest.raises(CacheFullError, match=r"over the cap of"):
        cache.ensure_capacity(257)
    assert cache.capacity == 256 and cache.version == version
    assert all(a is b for a, b in zip(cache.buffers, buffers))
    assert (cache.buffers[0][:, :, :8] == 1.0).all()


def test_max_capacity():
    cache = small(slots=1, capacity=1000, max_capacity=300)
    assert cache.capacity == 300  # the first allocation is clamped too
    cache = small(slots=1, capacity=8, max_capacity=300)
    cache.ensure_capacity(270)
    assert cache.capacity == 300  # growth rounds to 512 but stops at the maximum
    cache.ensure_capacity(300)
    assert cache.capacity == 300
    with pytest.raises(CacheFullError, match="301 tokens exceed the cache's maximum of 300"):
        cache.ensure_capacity(301)
    assert cache.capacity == 300


def test_a_free_slot_worth_keeping_makes_the_cache_grow_within_its_cap():
    cache = KVCache(2, 1, 4, np.float32, slots=1, capacity=8, max_slots=4)
    kept = cache.allocate_slot()
    cache.free_slot(kept)
    assert cache.allocate_slot(avoid={kept}) == 1 and cache.slots == 2  # the kept prompt stays in slot 0
    capped = KVCache(2, 1, 4, np.float32, slots=1, capacity=8, max_slots=4, max_bytes=cache.nbytes_for(8, 1))
    kept = capped.allocate_slot()
    capped.free_slot(kept)
    assert capped.allocate_slot(avoid={kept}) == kept and capped.slots == 1  # no room: the kept slot is given out
