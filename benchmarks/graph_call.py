"""Median time of one graph call of one sequence: what the benchmarks comparing ways of making that call time."""
from __future__ import annotations

import statistics
import time

import numpy as np

from llm_runtime.graph.runner import Step


def call_ms(llm, tokens: int = 1, cached: int = 99, reps: int = 400, warmup: int = 20) -> float:
    """`llm` (an LLM) runs `tokens` new tokens on top of `cached` ones in its single-sequence cache, `reps` times
    after `warmup` untimed calls; the median in ms."""
    llm.cache.ensure_capacity(512)
    ids = np.full((1, tokens), 100, np.int64)  # [1, tokens]
    step = Step(ids, np.array([cached + tokens]), np.array([tokens]), np.arange(tokens))
    for _ in range(warmup):
        llm.runner.run(step, llm.cache)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        llm.runner.run(step, llm.cache)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)
