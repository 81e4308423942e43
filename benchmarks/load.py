"""Aggregate throughput under load: our continuous-batching engine vs onnxruntime-genai's static batches.

    python benchmarks/load.py --model default --concurrency 1,4,8,16,32 [--decode-tokens 128] [--rounds 3]
                              [--compare onnxruntime-genai] [--json OUT]
    python benchmarks/load.py --model default --concurrency 1,8,16 --before OLD_CHECKOUT/.venv/bin/python

`--before` measures our engine twice, alternating fresh processes: this checkout and the interpreter of another
checkout (its installed package, driven by this script), for before/after tables of a change.

Ours: N requests submitted at once through `LLM.submit` (max_concurrency = N), each 128 new tokens, greedy.
Theirs: the same N requests as static batches of at most 16 (`batch_size` search option), the CPU
path onnxruntime-genai offers. Both get the same text: each request rendered with the folder's chat template
(SmolLM2's adds its default system prompt). Each measurement runs in a fresh process; results are medians.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from launcher import child_main, run_child


def prompts(n: int) -> list[str]:
    topics = (Path(__file__).resolve().parent / "prompts" / "bench_topics.txt").read_text().split("\n")
    topics = [t for t in topics if t]
    return [f"Write a short story about {topics[i % len(topics)]}." for i in range(n)]


def chat_texts(folder: str, n: int) -> list[str]:
    """The N requests rendered with the folder's chat template, as the server renders them: the text both
    engines tokenize, so both compute the same prompt tokens."""
    try:
        from llm_runtime.chat.template import ChatTemplate
        from llm_runtime.models.folder import ModelFolder
    except ImportError:  # a checkout from before the runtime was grouped by concern (--before)
        from llm_runtime.chat_template import ChatTemplate
        from llm_runtime.model_folder import ModelFolder

    template = ChatTemplate.for_model(ModelFolder.open(folder))
    return [template.render([{"role": "user", "content": p}], add_generation_prompt=True) for p in prompts(n)]


def ours(folder: str, n: int, tokens: int) -> dict:
    """The N requests submitted one by one and read on one event loop, as the server reads them (one wakeup per
    engine step for all streams, not a thread per stream)."""
    from llm_runtime import LLM, SamplingParams

    try:
        from llm_runtime.engine import EngineConfig
    except ImportError:  # a checkout from before EngineConfig (--before)
        llm = LLM(folder, max_running=max(n, 1), token_budget=512)
    else:
        llm = LLM(folder, engine=EngineConfig(max_concurrency=max(n, 1), token_budget=512))
    params = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)
    ids = [llm.encode(text, special=False) for text in chat_texts(folder, n)]
    llm.generate("warm up", SamplingParams(max_tokens=4))
    ttft, count = [], 0

    async def run() -> float:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        handles = [llm.submit(i, params, loop=loop) for i in ids]

        async def consume(handle) -> None:
            nonlocal count
            first = True
            async for chunk in handle:
                if first:
                    ttft.append(time.perf_counter() - start)
                    first = False
                count += len(chunk.token_ids)

        await asyncio.gather(*(consume(h) for h in handles))
        return time.perf_counter() - start

    wall = asyncio.run(run())
    return {"tok_s": count / wall, "ttft_p50": statistics.median(ttft), "ttft_max": max(ttft), "wall": wall}


def genai(folder: str, n: int, tokens: int, batch: int = 16) -> dict:
    import onnxruntime_genai as og

    model = og.Model(folder)
    tok = og.Tokenizer(model)
    texts = chat_texts(folder, n)
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


def child(engine: str, folder: str, n: int, tokens: int) -> dict:
    """In the child process: one measurement."""
    return (ours if engine == "ours" else genai)(folder, n, tokens)


def scaling(folder: str, concurrency: list[int], tokens: int, rounds: int, compare: bool, out=print,
            before: str | None = None) -> list[dict]:
    """One row per concurrency: medians of aggregate tokens/s and TTFT, ours and (optionally) genai's or ours
    under the `before` interpreter (alternating with ours, round by round)."""
    out(f"{tokens} new tokens per request, greedy; one fresh process per measurement")
    out(f"{'N':>3} {'ours tok/s':>11} {'ours TTFT p50':>14}" + (f" {'genai tok/s':>12} {'ratio':>6} {'genai TTFT p50':>15}" if compare else "")
        + (f" {'before tok/s':>13} {'ratio':>6} {'before TTFT p50':>16}" if before else ""))
    rows = []
    for n in concurrency:
        if before:
            a, b = [], []
            for i in range(rounds):  # the order flips every round
                for side in (a, b)[::1 - 2 * (i % 2)]:
                    side.append(run_child(__file__, "ours", folder, n, tokens,
                                          python=sys.executable if side is a else before))
            row = {"n": n, "ours_tok_s": statistics.median(r["tok_s"] for r in a),
                   "ours_ttft_p50": statistics.median(r["ttft_p50"] for r in a),
                   "before_tok_s": statistics.median(r["tok_s"] for r in b),
                   "before_ttft_p50": statistics.median(r["ttft_p50"] for r in b)}
            out(f"{n:>3} {row['ours_tok_s']:>11.1f} {row['ours_ttft_p50']:>13.2f}s {row['before_tok_s']:>13.1f} "
                f"{row['ours_tok_s'] / row['before_tok_s']:>6.2f} {row['before_ttft_p50']:>15.2f}s")
            rows.append(row)
            continue
        a = [run_child(__file__, "ours", folder, n, tokens) for _ in range(rounds)]
        row = {"n": n, "ours_tok_s": statistics.median(r["tok_s"] for r in a),
               "ours_ttft_p50": statistics.median(r["ttft_p50"] for r in a)}
        line = f"{n:>3} {row['ours_tok_s']:>11.1f} {row['ours_ttft_p50']:>13.2f}s"
        if compare:
            b = [run_child(__file__, "genai", folder, n, tokens) for _ in range(rounds)]
            row.update(genai_tok_s=statistics.median(r["tok_s"] for r in b),
                       genai_ttft_p50=statistics.median(r["ttft_p50"] for r in b))
            line += f" {row['genai_tok_s']:>12.1f} {row['ours_tok_s'] / row['genai_tok_s']:>6.2f} {row['genai_ttft_p50']:>14.2f}s"
        out(line)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="built folder, Hugging Face folder, .gguf or 'default'")
    ap.add_argument("--concurrency", default="1,4,8,16,32", help="comma-separated numbers of concurrent requests")
    ap.add_argument("--decode-tokens", type=int, default=128, help="new tokens per request, EOS ignored")
    ap.add_argument("--rounds", type=int, default=3, help="fresh processes per engine and concurrency (median)")
    ap.add_argument("--compare", choices=["onnxruntime-genai"], help="also measure its static batches of 16")
    ap.add_argument("--before", metavar="PYTHON",
                    help="also measure our engine under this interpreter (another checkout's venv), alternating")
    ap.add_argument("--json", type=Path, help="write the rows to this file")
    args = ap.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    if args.rounds < 1 or args.decode_tokens < 1 or min(levels) < 1:
        ap.error("--rounds, --decode-tokens and every concurrency must be >= 1")
    from llm_runtime.models.resolver import resolve_model

    folder = str(resolve_model(args.model))
    if args.compare and args.before:
        ap.error("--compare and --before are measured separately")
    rows = scaling(folder, levels, args.decode_tokens, args.rounds, bool(args.compare), before=args.before)
    if args.json:
        args.json.write_text(json.dumps({"model": folder, "concurrency": rows}, indent=2) + "\n")


if __name__ == "__main__":
    child_main(child) or main()
