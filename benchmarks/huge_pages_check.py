"""Decode graph call with the weights on transparent huge pages (as `LLM` loads them on Linux) and without.

    python benchmarks/huge_pages_check.py [--model default] [--pairs 6]

Each measurement is a fresh process (the collapse happens at load); the two kinds alternate in pairs. A child
times 400 one-token graph calls of one sequence at 100 cached tokens and prints the median in ms.
"""
from __future__ import annotations

import argparse
import statistics

from launcher import child_main, run_child


def child(model: str, huge: bool) -> float:
    """In the child process: the median decode graph call in ms, with or without huge-page weights."""
    import llm_runtime.graph.session as session
    if not huge:
        session.collapse_weights = lambda: 0
    from graph_call import call_ms

    from llm_runtime import LLM

    return call_ms(LLM(model, threads=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--pairs", type=int, default=6)
    args = ap.parse_args()
    ratios = []
    for _ in range(args.pairs):
        ms = {kind: run_child(__file__, args.model, kind == "huge") for kind in ("4k", "huge")}
        ratios.append(ms["4k"] / ms["huge"])
        print(f"4 KiB pages {ms['4k']:.3f} ms, huge pages {ms['huge']:.3f} ms: {ratios[-1]:.3f}x", flush=True)
    print(f"median speedup of the graph call on huge pages: {statistics.median(ratios):.3f}x")


if __name__ == "__main__":
    child_main(child) or main()
