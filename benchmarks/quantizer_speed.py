"""Time and weighted error of the float-weight quantizers on a Hugging Face folder's linear weights.

    .venv/bin/python benchmarks/quantizer_speed.py HF_FOLDER [--before REV] [--rounds 3] [--threads 1]

Each round quantizes every 2D weight (linears at 4 bits, the embedding at 8) with round-to-nearest, the search
quantizer of this tree and, with --before, the search of git revision REV (its model_builder/scale_search.py,
imported beside this tree's quantize.py), alternating the order; prints the fastest round of each, the ratio to
round-to-nearest, the weighted error (rms(block) + |x| weights, what the search minimises) relative to
round-to-nearest, and how many blocks ended above round-to-nearest's error (symmetric and zero-point grids).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from llm_runtime.model_builder import quantize, scale_search

ROOT = Path(__file__).resolve().parents[1]


def load_before(rev: str):
    """scale_search.py at git revision `rev`, as a module inside llm_runtime.model_builder (its relative imports)."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:model_builder/scale_search.py"], check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "scale_search_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("llm_runtime.model_builder._scale_search_before", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def weighted_error(w: np.ndarray, bq, block: int) -> np.ndarray:
    """[N, k_blocks]: sum over each block of (rms(block) + |x|) * (dequantized - x)^2, in float64."""
    n, k = w.shape
    pad = -k % block
    x = np.pad(w, ((0, 0), (0, pad))).reshape(n, -1, block).astype(np.float64)
    d = np.pad(quantize.dequantize_blockwise(bq) - w, ((0, 0), (0, pad))).reshape(n, -1, block)
    return ((np.sqrt((x * x).mean(-1, keepdims=True)) + np.abs(x)) * d * d).sum(-1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--grid", default="offsets", choices=["symmetric", "zero_points", "offsets"])
    p.add_argument("--before", help="also time the search at this git revision")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=scale_search.THREADS, help="the search's thread pool")
    args = p.parse_args(argv)
    tensors = {}
    for f in sorted(args.folder.glob("*.safetensors")):
        tensors.update({k: v.astype(np.float32) for k, v in load_file(f).items() if v.ndim == 2})
    bits = {k: 8 if "embed_tokens" in k or "lm_head" in k else 4 for k in tensors}
    symmetric = args.grid == "symmetric"
    ways = {"rtn": lambda w, b: quantize.quantize_blockwise(w, b, 32, symmetric)}
    ways["search"] = lambda w, b: scale_search.quantize_searched(w, b, 32, args.grid)
    if args.before:
        before = load_before(args.before)
        ways[f"search@{args.before}"] = lambda w, b: before.quantize_searched(w, b, 32, args.grid)
    scale_search.THREADS = args.threads
    print(f"{len(tensors)} tensors, {sum(v.size for v in tensors.values()) / 1e6:.1f} M weights, grid {args.grid}, "
          f"search threads {args.threads}, load average {os.getloadavg()[0]:.2f}")
    times = {k: [] for k in ways}
    for r in range(args.rounds):
        for name in (list(ways) if r % 2 == 0 else list(reversed(ways))):
            start = time.perf_counter()
            for k, w in tensors.items():
                ways[name](w, bits[k])
            times[name].append(time.perf_counter() - start)
        print(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items())
              + f" (load average {os.getloadavg()[0]:.2f})", flush=True)
    errors = {k: 0.0 for k in ways}
    worse = {k: 0 for k in ways}
    excess = {k: 1.0 for k in ways}  # the largest error / round-to-nearest's among those blocks
    for k, w in tensors.items():
        ref = weighted_error(w, ways["rtn"](w, bits[k]), 32)
        for name, fn in ways.items():
            e = weighted_error(w, fn(w, bits[k]), 32)
            errors[name] += e.sum()
            above = e > ref * (1 + 1e-5) + 1e-12
            worse[name] += int(above.sum())
            if above.any():
                excess[name] = max(excess[name], float((e[above] / ref[above]).max()))
    blocks = sum(-(-w.shape[1] // 32) * w.shape[0] for w in tensors.values())
    print(f"{'quantizer':<24}{'fastest s':>10}{'/ rtn':>8}{'error / rtn':>13}"
          f"{f'blocks above rtn (of {blocks})':>32}{'largest ratio':>15}")
    for name in ways:
        best = min(times[name])
        above, ratio = ("", "") if args.grid == "offsets" else (str(worse[name]), f"{excess[name]:.6f}")
        print(f"{name:<24}{best:>10.2f}{best / min(times['rtn']):>8.2f}{errors[name] / errors['rtn']:>13.4g}"
              f"{above:>32}{ratio:>15}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
