"""Prompt-lookup speculation against plain decoding, per kind of prompt, side by side in one run.

    python benchmarks/speculation_bench.py [--model default] [--rounds 2] [--max-tokens 128] [--threads 2]

The prompts are benchmarks/prompts/speculation_bench.jsonl: passage question answering, summarization, code editing (text
that copies its input) and open chat (nothing to copy). Each prompt is rendered with the model's chat template and
run greedily, alternating plain and speculative decoding in one process (fresh prompt caches); decode tok/s is
(tokens - 1) / (time from the first token to the last), summed over a kind's prompts. onnxruntime-genai runs the
same folder and token ids, plainly and with its own n-gram speculation (`set_speculative_options`). Then 8
concurrent grounded requests through our engine, with and without speculation: aggregate tok/s, submit to done.
Also printed: acceptance rate and mean accepted drafts per verification (from the engine's counters), and how
many greedy replies are the same token for token with and without speculation (int4: verification calls round
like prefill, decode calls like decode).
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

from llm_runtime import LLM, SamplingParams
from llm_runtime.models.resolver import resolve_model

PROMPTS = Path(__file__).resolve().parent / "prompts" / "speculation_bench.jsonl"
KINDS = ("passage_qa", "summarization", "code_edit", "open_chat")


def load_prompts() -> list[dict]:
    return [json.loads(line) for line in PROMPTS.read_text().splitlines() if line.strip()]


def ours_decode(llm: LLM, ids: list[int], params: SamplingParams) -> tuple[list[int], float]:
    """Greedy reply token ids and seconds from the first token to the last."""
    llm.reset_prefix_cache()
    tokens, first = [], None
    for chunk in llm.submit(ids, params):  # both through the engine: only the drafts differ
        tokens += chunk.token_ids
        if first is None and tokens:
            first = time.perf_counter()
    return tokens, time.perf_counter() - first


def genai_runner(folder: Path, threads: int):
    import onnxruntime_genai as og

    config = og.Config(str(folder))
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
    model = og.Model(config)

    def run(ids: list[int], max_tokens: int, speculate: bool) -> tuple[int, float]:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + max_tokens, do_sample=False)
        if speculate:
            params.set_speculative_options(ngram_size=3, max_draft_tokens=4)
        gen = og.Generator(model, params)
        gen.append_tokens(ids)
        n, first = 0, None
        while not gen.is_done():
            gen.generate_next_token()
            n += len(gen.get_next_tokens())
            if first is None:
                first = time.perf_counter()
        return n, time.perf_counter() - first

    return run


def rate(tokens: int, seconds: float) -> float:
    return tokens / seconds if seconds > 0 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--num-speculative-tokens", type=int, default=4)
    ap.add_argument("--no-genai", action="store_true")
    args = ap.parse_args()
    folder = resolve_model(args.model)
    plain = LLM(str(folder), threads=args.threads)
    spec = LLM(str(folder), threads=args.threads, speculation="ngram", num_speculative_tokens=args.num_speculative_tokens)
    genai = None if args.no_genai else genai_runner(folder, args.threads)
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0)
    prompts = load_prompts()
    for p in prompts:
        p["ids"] = plain.encode(plain.render_chat([{"role": "user", "content": p["prompt"]}]), special=False)
    # kind -> system -> [tokens after the first, seconds]
    totals: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0]))
    same = defaultdict(int)
    for r in range(args.rounds):
        for i, p in enumerate(prompts):
            order = [("plain", plain), ("ngram", spec)]
            for name, llm in order if (r + i) % 2 == 0 else order[::-1]:
                tokens, seconds = ours_decode(llm, p["ids"], params)
                totals[p["kind"]][name][0] += len(tokens) - 1
                totals[p["kind"]][name][1] += seconds
                p[name] = tokens
            same[p["kind"]] += p["plain"] == p["ngram"]
            if genai is not None:
                for name, speculate in (("genai", False), ("genai ngram", True)):
                    n, seconds = genai(p["ids"], args.max_tokens, speculate)
                    totals[p["kind"]][name][0] += n - 1
                    totals[p["kind"]][name][1] += seconds
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    stats = spec.engine.stats()
    systems = ["plain", "ngram"] + ([] if genai is None else ["genai", "genai ngram"])
    print(f"\ndecode tok/s, greedy, {args.max_tokens} new tokens at most, {args.rounds} round(s), threads={args.threads}")
    print("| kind | " + " | ".join(systems) + " | ngram / plain | genai ngram / genai | same greedy reply |")
    print("|---" * (len(systems) + 4) + "|")
    grounded = defaultdict(lambda: [0.0, 0.0])
    for kind in KINDS:
        t = totals[kind]
        rates = {s: rate(*t[s]) for s in systems}
        if kind != "open_chat":
            for s in systems:
                grounded[s][0] += t[s][0]
                grounded[s][1] += t[s][1]
        g = f"{rates['genai ngram'] / rates['genai']:.2f}" if genai is not None else "-"
        n = sum(1 for p in prompts if p["kind"] == kind) * args.rounds
        print(f"| {kind} | " + " | ".join(f"{rates[s]:.0f}" for s in systems) +
              f" | {rates['ngram'] / rates['plain']:.2f} | {g} | {same[kind]}/{n} |")
    g_rates = {s: rate(*grounded[s]) for s in systems}
    g = f"{g_rates['genai ngram'] / g_rates['genai']:.2f}" if genai is not None else "-"
    print("| grounded together | " + " | ".join(f"{g_rates[s]:.0f}" for s in systems) +
          f" | {g_rates['ngram'] / g_rates['plain']:.2f} | {g} | |")
    print(f"\nengine counters (speculative LLM): {stats.draft_tokens} drafts verified, {stats.accepted_tokens} accepted "
          f"(acceptance {stats.accepted_tokens / max(stats.draft_tokens, 1):.2f}), {stats.verifications} verifications, "
          f"mean accepted per verification {stats.accepted_tokens / max(stats.verifications, 1):.2f}")

    grounded_ids = [p["ids"] for p in prompts if p["kind"] != "open_chat"][:8]
    print("\n8 concurrent grounded requests, aggregate tok/s (submit to last token)")
    for r in range(args.rounds):
        row = {}
        for name, llm in (("plain", plain), ("ngram", spec)) if r % 2 == 0 else (("ngram", spec), ("plain", plain)):
            llm.reset_prefix_cache()
            start = time.perf_counter()
            handles = [llm.submit(ids, params) for ids in grounded_ids]
            n = sum(len(h.result().token_ids) for h in handles)
            row[name] = n / (time.perf_counter() - start)
        print(f"round {r + 1}: plain {row['plain']:.0f}, ngram {row['ngram']:.0f}, ratio {row['ngram'] / row['plain']:.2f}")


if __name__ == "__main__":
    main()
