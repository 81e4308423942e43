"""EngineConfig: validated once, when it is built; the scheduler and the cache take their limits from it."""
import numpy as np
import pytest

from llm_runtime.engine import EngineConfig
from llm_runtime.engine.scheduler import Scheduler
from llm_runtime.kv_cache import KVCache


@pytest.mark.parametrize("field, value", [("max_concurrency", 0), ("max_waiting", -1), ("token_budget", 1),
                                          ("chunk_size", 1), ("chunk_size", 2.5), ("max_cache_bytes", 0),
                                          ("max_concurrency", "4")])
def test_bad_values_are_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        EngineConfig(**{field: value})


def test_the_scheduler_takes_its_limits_from_the_config():
    config = EngineConfig(max_concurrency=3, max_waiting=5, token_budget=40, chunk_size=16)
    cache = KVCache(2, 1, 16, np.float32, slots=1, capacity=16, max_slots=config.max_concurrency)
    s = Scheduler(cache, config)
    assert (s.max_concurrency, s.max_waiting, s.token_budget, s.chunk_size) == (3, 5, 40, 16)


def test_the_cache_doubles_its_slots_up_to_max_concurrency_and_keeps_what_they_hold():
    cache = KVCache(2, 1, 4, np.float32, slots=1, capacity=8, max_slots=3)
    first = cache.allocate_slot()
    cache.buffers[0][first] = 7.0
    cache.lengths[first] = 5
    assert [cache.allocate_slot(), cache.allocate_slot()] == [1, 2]
    assert cache.slots == 3 and cache.buffers[0].shape == (3, 1, 8, 4)
    assert (cache.buffers[0][first] == 7.0).all() and cache.lengths.tolist() == [5, 0, 0]
    assert cache.nbytes == cache.nbytes_for(8, 3) == sum(b.nbytes for b in cache.buffers)
