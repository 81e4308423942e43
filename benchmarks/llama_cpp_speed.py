"""Single-stream speed against llama.cpp on the same GGUF file: llama.cpp's `llama-bench` runs the file itself, ours
runs our default build of it (single_stream.py's measurement); fresh processes, alternating, medians.

    python benchmarks/llama_cpp_speed.py --llama-cpp-bin DIR [--model default] [--rounds 5] [--threads 2]

Decode: 128 greedy tokens (llama-bench `-n 128` from an empty cache; ours after the short chat prompt, EOS
ignored). Prefill: the long benchmark prompt (`llama-bench -p N` with N its token count, ours the same text). DIR
holds llama-bench (built from llama.cpp's source as benchmarks/results/2026-12-02-avx512.md says).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
from pathlib import Path

from single_stream import OURS, load_workload, measure_in_child


def llama_bench(bin_dir: Path, gguf: Path, prompt_tokens: int, decode_tokens: int, threads: int) -> dict[str, float]:
    """llama-bench's mean tokens/s of one prefill of `prompt_tokens` and one decode of `decode_tokens`."""
    out = subprocess.run([bin_dir / "llama-bench", "-m", gguf, "-p", str(prompt_tokens), "-n", str(decode_tokens),
                          "-t", str(threads), "-r", "1", "-o", "json"], check=True, capture_output=True, text=True)
    tests = json.loads(out.stdout)
    return {"prefill": next(t["avg_ts"] for t in tests if t["n_prompt"]),
            "decode": next(t["avg_ts"] for t in tests if t["n_gen"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-cpp-bin", type=Path, required=True)
    ap.add_argument("--model", default="default", help="the GGUF file ('default': the default model's)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from llm_runtime.models.default import default_gguf
    from llm_runtime.models.resolver import resolve_model

    gguf = default_gguf() if args.model == "default" else Path(args.model)
    folder = resolve_model(str(gguf) if args.model != "default" else "default")
    w = load_workload(folder)
    rates: dict[str, dict[str, list[float]]] = {e: {"prefill": [], "decode": []} for e in ("llama.cpp", OURS)}
    prompt_tokens = None
    for r in range(args.rounds):
        load = os.getloadavg()[0]
        ours = measure_in_child(OURS, folder, args.threads, w)
        prompt_tokens = ours.long_prompt_tokens
        theirs = llama_bench(args.llama_cpp_bin, gguf, prompt_tokens, w.decode_tokens, args.threads)
        for e, f in (("llama.cpp", theirs), (OURS, {"prefill": ours.long_prefill_tps, "decode": ours.decode_tps})):
            for k in f:
                rates[e][k].append(f[k])
        print(f"round {r + 1} (load {load:.2f}): ours decode {ours.decode_tps:.1f}, prefill {ours.long_prefill_tps:.0f}"
              f"; llama.cpp decode {theirs['decode']:.1f}, prefill {theirs['prefill']:.0f} tok/s", flush=True)
    print(f"\n{args.rounds} rounds, {args.threads} threads, long prompt {prompt_tokens} tokens, decode {w.decode_tokens}")
    print("| tok/s (median) | ours | llama.cpp | ours / llama.cpp | per-round ratios |")
    print("|---|---|---|---|---|")
    for k in ("decode", "prefill"):
        a, b = rates[OURS][k], rates["llama.cpp"][k]
        per = ", ".join(f"{x / y:.2f}" for x, y in zip(a, b))
        print(f"| {k} | {statistics.median(a):.1f} | {statistics.median(b):.1f} | "
              f"{statistics.median(a) / statistics.median(b):.2f} | {per} |")


if __name__ == "__main__":
    main()
