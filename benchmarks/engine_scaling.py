"""Aggregate throughput under load: our continuous-batching engine vs onnxruntime-genai's static batches.

    python benchmarks/engine_scaling.py [--model default] [--concurrency 1,4,8,16,32] [--tokens 128]

Ours: N requests submitted at once to the engine (max_running = N), each 128 new tokens, greedy.
Theirs: the same N requests as static batches of at most 16 (`batch_size` search option), the CPU
path onnxruntime-genai offers. Each measurement runs in a fresh process; results are medians.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from importlib import resources


def prompts(n: int) -> list[str]:
    topics = (resources.files("prompts") / "bench_topics.txt").read_text().split("\n")
    topics = [t for t in topics if t]
    return [f"Write a short story about {topics[i % len(topics)]}." for i in range(n)]


def ours(folder: str, n: int, tokens: int) -> dict:
    from llm_runtime import LLM, SamplingParams

    llm = LLM(folder, max_running=max(n, 1), token_budget=512)
    params = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)
    ids = [llm.encode(llm.render_chat([{"role": "user", "content": p}]), special=False) for p in prompts(n)]
    llm.generate("warm up", SamplingParams(max_tokens=4))
    start = time.perf_counter()
    handles = [llm.engine.submit(i, params) for i in ids]
    ttft, count = [], 0
    import threading

    def consume(h):
        nonlocal count
        first = None
        for chunk in h:
            first = first or time.perf_counter()
            count += len(chunk.token_ids)
        ttft.append(first - start)

    threads = [threading.Thread(target=consume, args=(h,)) for h in handles]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"tok_s": count / wall, "ttft_p50": statistics.median(ttft), "ttft_max": max(ttft), "wall": wall}


def genai(folder: str, n: int, tokens: int, batch: int = 16) -> dict:
    import onnxruntime_genai as og

    model = og.Model(folder)
    tok = og.Tokenizer(model)
    texts = [f"<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n" for p in prompts(n)]
    start, count, ttft = time.perf_counter(), 0, []
    for i in range(0, n, batch):
        part = texts[i:i + batch]
        enc = tok.encode_batch(part)
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=int(enc.shape()[1]) + tokens, do_sample=False, batch_size=len(part),
                                  min_length=int(enc.shape()[1]) + tokens)
        gen = og.Generator(model, params)
        gen.append_tokens(enc)
        steps = 0
        while not gen.is_done() and steps < tokens:
            gen.generate_next_token()
            if steps == 0:
                ttft += [time.perf_counter() - start] * len(part)
            steps += 1
        count += steps * len(part)
        del gen
    wall = time.perf_counter() - start
    return {"tok_s": count / wall, "ttft_p50": statistics.median(ttft), "ttft_max": max(ttft), "wall": wall}


def run_child(engine: str, folder: str, n: int, tokens: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", engine, "--folder", folder, "--n", str(n),
                          "--tokens", str(tokens)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--concurrency", default="1,4,8,16,32")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--worker"), ap.add_argument("--folder"), ap.add_argument("--n", type=int)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps((ours if args.worker == "ours" else genai)(args.folder, args.n, args.tokens)))
        return
    from llm_runtime.model_resolver import resolve_model

    folder = str(resolve_model(args.model))
    print(f"model {folder}, {args.tokens} new tokens per request, greedy")
    print(f"{'N':>3} {'ours tok/s':>11} {'genai tok/s':>12} {'ratio':>6} {'ours TTFT p50':>14} {'genai TTFT p50':>15}")
    for n in [int(x) for x in args.concurrency.split(",")]:
        a, b = [], []
        for _ in range(args.rounds):
            a.append(run_child("ours", folder, n, args.tokens))
            b.append(run_child("genai", folder, n, args.tokens))
        ta = statistics.median(r["tok_s"] for r in a)
        tb = statistics.median(r["tok_s"] for r in b)
        fa = statistics.median(r["ttft_p50"] for r in a)
        fb = statistics.median(r["ttft_p50"] for r in b)
        print(f"{n:>3} {ta:>11.1f} {tb:>12.1f} {ta / tb:>6.2f} {fa:>13.2f}s {fb:>14.2f}s", flush=True)


if __name__ == "__main__":
    main()
