"""MatMulNBits at accuracy_level 4 (int8 activations) against 0 (float activations) on the default model's shapes,
side by side in one run, with the encodings the builds use: no zero points (round-to-nearest), packed uint8 zero
points (the exact import's centered Q4_1 blocks), and zero points plus the offset term.

    python benchmarks/accuracy_levels.py [--tokens 1] [--threads 2] [--rounds 5]

Prints the median time per node and its ratio to 4-bit, no zero points, accuracy_level 4 (nbits_paths.py's graphs).
"""
from __future__ import annotations

import argparse
import os
import statistics

import numpy as np
from nbits_paths import SHAPES, session, time_us

COMBOS = {  # name -> (bits, block, zero points, accuracy_level)
    "L4": (4, 32, None, 4), "zp L4": (4, 32, "uint8", 4), "zp+offset L4": (4, 32, "split", 4),
    "L0": (4, 32, None, 0), "zp L0": (4, 32, "uint8", 0), "8-bit L4": (8, 32, None, 4),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeat", type=int, default=3, help="chained nodes per graph")
    a = p.parse_args()
    print(f"{a.tokens} token(s), {a.threads} threads, load average {os.getloadavg()[0]:.2f}")
    for shape, (n, k) in SHAPES.items():
        sessions = {c: session(n, k, bits, block, zp, a.repeat, level, a.threads)
                    for c, (bits, block, zp, level) in COMBOS.items()}
        x = np.random.default_rng(1).standard_normal((a.tokens, k)).astype(np.float32)
        times: dict[str, list[float]] = {c: [] for c in sessions}
        for _ in range(a.rounds):
            for c, s in sessions.items():
                times[c].append(time_us(s, x, 10 if a.tokens == 1 else 3, a.repeat))
        base = statistics.median(times["L4"])
        print(f"{shape}: " + "  ".join(f"{c} {statistics.median(t):.0f} us ({statistics.median(t) / base:.2f}x)"
                                      for c, t in times.items()), flush=True)
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
