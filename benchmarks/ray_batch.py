"""The Ray batch path against the local batch job at equal total threads, each in a fresh process, alternating.

Both run `llm-runtime batch` on the same requests (chat prompts, greedy, ignore_eos, so every request
generates exactly --max-tokens). This parent watches the output file: startup is the time from launching
the process to the first result line (model load, and for Ray the cluster and its actors); tokens/s is the
completion tokens written after the first line divided by the time from the first line to the last.
    python benchmarks/ray_batch.py --requests 256 --rounds 2
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = [sys.executable, "-m", "llm_runtime.cli.main", "batch"]


def requests(n: int, max_tokens: int) -> list[dict]:
    topics = ["rivers", "bread", "planets", "chess", "volcanoes", "music", "birds", "bridges"]
    return [{"custom_id": f"r{i}", "messages": [{"role": "user", "content": f"Tell me about {topics[i % 8]} ({i})."}],
             "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True} for i in range(n)]


def run(cmd: list[str], out: Path) -> dict:
    """Launch, watch `out` grow, return startup seconds, tokens/s after the first line, total seconds."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = None
    while proc.poll() is None:
        if first is None and out.exists() and out.stat().st_size:
            first = time.perf_counter()
        time.sleep(0.02)
    end = time.perf_counter()
    if proc.returncode:
        raise SystemExit(f"{cmd} failed: {proc.stderr.read()[-2000:]}")
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    tokens = [x["response"]["body"]["usage"]["completion_tokens"] for x in lines]
    last_write = out.stat().st_mtime - (time.time() - time.perf_counter())
    return {"startup": first - start, "tok_s": (sum(tokens) - tokens[0]) / (last_write - first),
            "total": end - start, "tokens": sum(tokens)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="default")
    p.add_argument("--requests", type=int, default=256)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="total onnxruntime threads of each path")
    p.add_argument("--replicas", type=int, default=2)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    src = tmp / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in requests(a.requests, a.max_tokens)))
    common = [str(src), "--model", a.model, "--max-concurrency", "16"]
    paths = {"local": ["--threads", str(a.threads)],
             "ray": ["--ray", "--replicas", str(a.replicas), "--threads-per-replica", str(a.threads // a.replicas)]}
    results: dict[str, list[dict]] = {k: [] for k in paths}
    for r in range(a.rounds):
        for name, extra in paths.items():
            out = tmp / f"{name}-{r}.jsonl"
            results[name].append(run(CLI + common + ["-o", str(out)] + extra, out))
            print(name, r, {k: round(v, 2) for k, v in results[name][-1].items()}, flush=True)
    print("| path | startup (s) | tokens/s after the first line | total (s) |")
    print("|---|---|---|---|")
    for name, runs in results.items():
        print(f"| {name} | " + " | ".join("/".join(f"{x[k]:.1f}" for x in runs) for k in ("startup", "tok_s", "total"))
              + " |")
    ratio = [ray["tok_s"] / loc["tok_s"] for ray, loc in zip(results["ray"], results["local"])]
    print("ray / local tokens/s per round:", " ".join(f"{x:.2f}" for x in ratio))


if __name__ == "__main__":
    main()
