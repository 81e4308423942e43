"""Decode speed of several built folders, side by side: the one-token graph call of one sequence at 100 cached
tokens (median of --reps calls, --threads 2), one fresh process per folder and round, folders alternating.
`--tokens N` times an N-token call instead (a prefill chunk).

    python benchmarks/decode_builds.py FOLDER [FOLDER ...] [--rounds 3] [--reps 100] [--tokens 1] [--threads 2]

Prints each round, then per folder the median over rounds in ms and tok/s, and the ratio to the first folder.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys


def child(model: str, reps: int, tokens: int, threads: int) -> float:
    from graph_call import call_ms

    from llm_runtime import LLM

    return call_ms(LLM(model, threads=threads), tokens=tokens, reps=reps, warmup=5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--tokens", type=int, default=1, help="new tokens per call (1: decode)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    ms: dict[str, list[float]] = {f: [] for f in args.folders}
    print(f"load average at start {os.getloadavg()[0]:.2f}", flush=True)
    for r in range(args.rounds):
        for f in args.folders:
            out = subprocess.run([sys.executable, __file__, "--child", f, str(args.reps), str(args.tokens), str(args.threads)], check=True,
                                 capture_output=True, text=True)
            ms[f].append(float(out.stdout.split()[-1]))
        print(f"round {r + 1}: " + ", ".join(f"{f} {ms[f][-1]:.3f} ms" for f in args.folders), flush=True)
    base = statistics.median(ms[args.folders[0]])
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    for f in args.folders:
        m = statistics.median(ms[f])
        print(f"{f}: {m:.3f} ms, {1000 * args.tokens / m:.1f} tok/s, {m / base:.2f}x the time of the first")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])))
    else:
        main()
