"""LoRA adapters on `llm-runtime serve` (loopback), the default model and rank-16 adapters on all seven linears:

    python benchmarks/lora_server.py [--concurrency 4] [--tokens 64] [--rounds 3] [--loads 5]

1. Base-only throughput: a server with two adapters loaded (the LoRA build) against a server without adapters
   (the plain build), the same streamed chat requests, alternating, medians of `--rounds`.
2. Adapter load into the running server: POST /v1/load_lora_adapter while `--concurrency` streams run (half on
   the base, half on a loaded adapter): the load's wall time, and the longest gap between streamed chunks of
   the running streams during each load against the longest outside any load (then the adapter is unloaded).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from load import prompts
from server_load import server_run, stream_request

RANK = 16


def write_adapter(folder: Path, seed: int) -> Path:
    """A random rank-16 adapter of the default model on q/k/v/o/gate/up/down of every layer, as our folder."""
    from llm_runtime.model_builder.config import model_config
    from llm_runtime.model_builder.gguf_source import GGUFSource

    from llm_runtime.adapters import LoraAdapter, LoraPair, linear_shapes, write_folder
    from llm_runtime.models.default import GGUF_NAME, home

    cfg = model_config(GGUFSource(home() / "models" / GGUF_NAME).config)
    rng = np.random.default_rng(seed)
    pairs = {m: LoraPair(rng.standard_normal((RANK, i), np.float32) * 0.02,
                         rng.standard_normal((o, RANK), np.float32) * 0.02) for m, (i, o) in linear_shapes(cfg).items()}
    write_folder(LoraAdapter(folder.name, pairs, cfg.model_type), folder)
    return folder


def serve(folder: str, port: int, *args: str) -> subprocess.Popen:
    cli = str(Path(sys.executable).parent / "llm-runtime")
    proc = subprocess.Popen([cli, "serve", "--model", folder, "--port", str(port), "--served-model-name", "bench",
                             "--no-access-log", *args])
    for _ in range(1200):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the server on {port} did not start")


async def load_under_streams(base: str, adapter: Path, name: str, streams: int, tokens: int) -> dict:
    """One load (and unload) of `adapter` while `streams` streamed requests run."""
    host, port = base.split("//")[1].split(":")
    texts = prompts(streams)
    bodies = [json.dumps({"model": "bench" if k % 2 == 0 else "r16-a", "stream": True, "max_tokens": tokens,
                          "ignore_eos": True, "temperature": 0, "stream_options": {"include_usage": True},
                          "messages": [{"role": "user", "content": texts[k]}]}).encode() for k in range(streams)]
    running = [asyncio.ensure_future(stream_request(host, int(port), b)) for b in bodies]
    await asyncio.sleep(1.0)  # every stream past its prompt
    async with httpx.AsyncClient(timeout=60) as client:
        start = time.perf_counter()
        r = await client.post(f"{base}/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(adapter)})
        end = time.perf_counter()
        r.raise_for_status()
        await asyncio.sleep(0.5)
        u = await client.post(f"{base}/v1/unload_lora_adapter", json={"lora_name": name})
        u.raise_for_status()
    results = await asyncio.gather(*running)
    if any(n != tokens for _, n in results):  # no request lost or cut short by the load and the unload
        raise RuntimeError(f"streams ended early: {[n for _, n in results]} of {tokens} tokens")
    during, outside = [], []
    for times, _ in results:
        for a, b in zip(times, times[1:]):  # a gap that overlaps the load counts as during it
            (during if b > start and a < end else outside).append(b - a)
    return {"load_s": end - start, "gap_during": max(during, default=0.0), "gap_outside": max(outside, default=0.0),
            "gaps_during": len(during), "gap_p50": statistics.median(outside)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--loads", type=int, default=5)
    ap.add_argument("--stream-tokens", type=int, default=160, help="tokens of each stream running during a load")
    args = ap.parse_args()
    from llm_runtime.adapters import LoraConfig
    from llm_runtime.llm_config import LLMConfig

    plain, lora = str(LLMConfig().model_folder()), str(LLMConfig(lora=LoraConfig()).model_folder())
    work = Path(tempfile.mkdtemp(prefix="lora-bench-"))
    adapters = [write_adapter(work / f"r16-{c}", seed) for seed, c in enumerate("abc")]
    bytes_ = sum(f.stat().st_size for f in adapters[2].iterdir())
    print(f"adapter: rank {RANK} on q,k,v,o,gate,up,down of every layer, {bytes_ / 2**20:.1f} MiB on disk")
    ports = (8761, 8762)
    procs = [serve(plain, ports[0], "--max-concurrency", str(args.concurrency)),
             serve(lora, ports[1], "--max-concurrency", str(args.concurrency), "--allow-adapter-updates",
                   "--lora", f"r16-a={adapters[0]}", "--lora", f"r16-b={adapters[1]}")]
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for b in bases:  # warm up
            asyncio.run(server_run(b, "bench", 1, 1, 8))
        runs: dict[str, list[float]] = {"plain": [], "adapters": []}
        for _ in range(args.rounds):
            for key, b in zip(runs, bases):
                runs[key].append(asyncio.run(server_run(b, "bench", args.concurrency, 2, args.tokens))["tok_s"])
        p, a = statistics.median(runs["plain"]), statistics.median(runs["adapters"])
        print(f"base-only, {args.concurrency} streams x {args.tokens} tokens, {args.rounds} rounds (tok/s each): "
              f"no adapters {[round(x, 1) for x in runs['plain']]}, 2 adapters loaded "
              f"{[round(x, 1) for x in runs['adapters']]}; medians {p:.1f} vs {a:.1f}: {a / p:.3f}x")
        loads = [asyncio.run(load_under_streams(bases[1], adapters[2], f"new-{i}", args.concurrency,
                                                args.stream_tokens)) for i in range(args.loads)]
        for i, r in enumerate(loads):
            print(f"load {i}: {r['load_s'] * 1e3:.0f} ms; longest chunk gap during it {r['gap_during'] * 1e3:.0f} ms "
                  f"({r['gaps_during']} gaps), outside {r['gap_outside'] * 1e3:.0f} ms "
                  f"(median {r['gap_p50'] * 1e3:.0f} ms)")
        print(f"load time median {statistics.median(r['load_s'] for r in loads) * 1e3:.0f} ms, "
              f"max {max(r['load_s'] for r in loads) * 1e3:.0f} ms; longest gap during loads "
              f"{max(r['gap_during'] for r in loads) * 1e3:.0f} ms, "
              f"outside {max(r['gap_outside'] for r in loads) * 1e3:.0f} ms")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
