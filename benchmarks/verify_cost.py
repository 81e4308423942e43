"""What a verification call costs against a decode call, per build, side by side in one process.

    python benchmarks/verify_cost.py [--builds default /path/to/int8-build ...] [--rows 1 8] [--tokens 1 2 3 4 5]
                                     [--rounds 40] [--cached 200] [--threads 2]

Each build gets its own session (same threads). A round times one graph call of every (build, rows, tokens)
cell, in an order that rotates each round, so load drift lands on every cell alike: `rows` sequences each feeding
`tokens` new tokens on top of `cached` ones, logits for every position (what a verified run asks for). Printed: the
median call per cell (ms) and its ratio to the 1-token call over the same rows of the same build (the median of
the per-round ratios), which is what a k-draft verification costs in decode calls (tokens = k + 1); then the same
from each cell's fastest tenth of calls (`--quantile`), which on a machine shared with other jobs leaves out the
calls whose threads were preempted (a 2-thread call that loses a core waits at every barrier). `--clock cpu`
times the calling thread's CPU time instead of the wall (with `--threads 1` onnxruntime computes on that thread),
the measure least moved by other jobs on the machine: it counts the work, not the waits.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import numpy as np

from llm_runtime import LLM
from llm_runtime.graph.runner import Step
from llm_runtime.kv_cache import KVCache
from llm_runtime.models.resolver import resolve_model


def verify_step(rows: int, tokens: int, cached: int) -> Step:
    ids = np.full((rows, tokens), 100, np.int64)  # [rows, tokens]
    return Step(ids, np.full(rows, cached + tokens), np.full(rows, tokens), np.arange(rows * tokens))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--builds", nargs="+", default=["default"])
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--tokens", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--cached", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quantile", type=float, default=0.1)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = ap.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        ap.error("--clock cpu needs --threads 1 (the calling thread does all the work only then)")
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    runs = {}
    for b in args.builds:
        llm = LLM(str(resolve_model(b)), threads=args.threads)
        c = llm.folder.contract
        cache = KVCache(c.num_layers, c.num_kv_heads, c.head_dim, np.dtype(c.kv_dtype), slots=max(args.rows),
                        capacity=args.cached + max(args.tokens) + 8)
        runs[b] = (llm.runner, cache)
    cells = [(b, r, t) for b in args.builds for r in args.rows for t in args.tokens]
    steps = {(r, t): verify_step(r, t, args.cached) for r in args.rows for t in args.tokens}
    times: dict[tuple, list[float]] = defaultdict(list)
    for cell in cells:  # warm-up
        runner, cache = runs[cell[0]]
        runner.run(steps[cell[1:]], cache)
    for i in range(args.rounds):
        shift = i % len(cells)
        for b, r, t in cells[shift:] + cells[:shift]:
            runner, cache = runs[b]
            start = clock()
            runner.run(steps[r, t], cache)
            times[b, r, t].append(clock() - start)
    print(f"graph call over rows x tokens ({args.cached} cached, {args.threads} threads, {args.rounds} rounds, {args.clock} time): "
          f"median ms, and x the 1-token call over the same rows")
    print("| build | rows | " + " | ".join(f"{t} tok" for t in args.tokens) + " |")
    print("|---|---|" + "---|" * len(args.tokens))
    for b in args.builds:
        for r in args.rows:
            base = times[b, r, args.tokens[0]]
            cells_txt = []
            for t in args.tokens:
                ratio = statistics.median(x / y for x, y in zip(times[b, r, t], base))
                cells_txt.append(f"{1000 * statistics.median(times[b, r, t]):.2f} ms ({ratio:.2f}x)")
            print(f"| {b} | {r} | " + " | ".join(cells_txt) + " |")
    print(f"\nthe same from the fastest {args.quantile:.0%} of each cell's calls (their mean)")
    print("| build | rows | " + " | ".join(f"{t} tok" for t in args.tokens) + " |")
    print("|---|---|" + "---|" * len(args.tokens))
    for b in args.builds:
        for r in args.rows:
            fast = {t: fastest(times[b, r, t], args.quantile) for t in args.tokens}
            print(f"| {b} | {r} | " + " | ".join(f"{1000 * fast[t]:.2f} ms ({fast[t] / fast[args.tokens[0]]:.2f}x)"
                                                for t in args.tokens) + " |")


def fastest(times: list[float], quantile: float) -> float:
    """Mean of the fastest `quantile` of the times (at least one)."""
    n = max(1, int(len(times) * quantile))
    return statistics.fmean(sorted(times)[:n])


if __name__ == "__main__":
    main()
