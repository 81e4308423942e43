"""Constrained against unconstrained decoding on the default model, through the engine, in one process.

Per batch size B (B requests submitted together, chat prompts on different topics), alternating the variants in
each round, median over rounds:
- free: no constraint, ignore_eos, max_tokens N (the baseline tokens/s)
- mask: an unrestrictive regex over the same N tokens (the cost of computing and applying a mask every step)
- schema: a JSON schema with fixed keys, as generated (its forced tokens come as chunks), and the same schema with
  fast-forward off; wall time against free requests of the same lengths (each as many tokens as its schema reply)
Mask time per step is llguidance's time for the step's constrained rows (in a worker thread, beside the graph).

    python benchmarks/structured_bench.py [--batches 1,16] [--tokens 64] [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import time

from llm_runtime import LLM, SamplingParams

TOPICS = ["cats", "rain", "Paris", "music", "chess", "bread", "the moon", "rivers", "trains", "tea", "snow",
          "bees", "maps", "glass", "salt", "wind"]
SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 16}, "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "city": {"type": "string", "maxLength": 16}, "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]},
                                                          "minItems": 1, "maxItems": 3},
    "address": {"type": "object", "properties": {"street": {"type": "string", "maxLength": 20},
                                                 "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                "required": ["street", "zip"], "additionalProperties": False}},
    "required": ["name", "age", "city", "tags", "address"], "additionalProperties": False}


def prompts(llm: LLM, batch: int) -> list[list[int]]:
    return [llm.encode(llm.render_chat([{"role": "user", "content": f"Describe a person who likes {TOPICS[i % 16]}, "
                                                                    "as JSON."}]), special=False)
            for i in range(batch)]


def run(llm: LLM, ids: list[list[int]], params: SamplingParams | list[SamplingParams]) -> tuple[float, int, int, float]:
    """(wall seconds, completion tokens, engine steps, mask seconds) for the batch submitted together (one params
    for all, or one per prompt); the per-request token counts are kept in `run.tokens`."""
    engine = llm.engine
    steps, masks = engine.steps, engine.constraints.mask_seconds
    each = params if isinstance(params, list) else [params] * len(ids)
    start = time.perf_counter()
    outs = [h.result() for h in [llm.submit(p, q) for p, q in zip(ids, each)]]
    wall = time.perf_counter() - start
    run.tokens = [o.usage.completion_tokens for o in outs]
    return wall, sum(run.tokens), engine.steps - steps, engine.constraints.mask_seconds - masks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    llm = LLM("default")
    rows = llm.engine.constraints
    n = args.tokens
    variants = {
        "free": SamplingParams(max_tokens=n, temperature=0.7, seed=1, ignore_eos=True),
        "mask": SamplingParams(max_tokens=n, temperature=0.7, seed=1, ignore_eos=True, regex=r"(.|\n)*"),
        "schema": SamplingParams(max_tokens=256, temperature=0.7, seed=1, json_schema=SCHEMA),
    }
    for batch in map(int, args.batches.split(",")):
        ids = prompts(llm, batch)
        run(llm, ids, variants["mask"])  # warm up: compile, first masks, cache growth
        results: dict[str, list] = {k: [] for k in ("free", "mask", "schema", "schema, no fast-forward", "free, same")}
        for _ in range(args.rounds):
            results["free"].append(run(llm, ids, variants["free"]))
            results["mask"].append(run(llm, ids, variants["mask"]))
            rows.fast_forward = True
            results["schema"].append(run(llm, ids, variants["schema"]))
            lengths = run.tokens  # each schema reply's token count
            rows.fast_forward = False
            results["schema, no fast-forward"].append(run(llm, ids, variants["schema"]))
            rows.fast_forward = True
            # each request as many free tokens as its schema reply had
            results["free, same"].append(run(llm, ids, [SamplingParams(max_tokens=n, temperature=0.7, seed=1,
                                                                       ignore_eos=True) for n in lengths]))
        print(f"batch {batch}:")
        base = statistics.median(t / w for w, t, _, _ in results["free"])
        for name, runs in results.items():
            tps = statistics.median(t / w for w, t, _, _ in runs)
            wall = statistics.median(w for w, _, _, _ in runs)
            steps = statistics.median(s for _, _, s, _ in runs)
            mask_ms = statistics.median(m / max(s, 1) * 1e3 for _, _, s, m in runs)
            tokens = statistics.median(t for _, t, _, _ in runs)
            print(f"  {name:24s} {tps:7.1f} tok/s ({tps / base:.2f}x free)  wall {wall * 1e3:7.1f} ms  "
                  f"tokens {tokens:5.0f}  steps {steps:4.0f}  mask {mask_ms:.3f} ms/step")


if __name__ == "__main__":
    main()
