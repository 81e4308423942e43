"""`llm-runtime bench --model M [--compare onnxruntime-genai]`: TTFT, prefill and decode speed, peak RSS."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..benchmark import GENAI, OURS, compare, format_table, load_workload


def add_arguments(p) -> None:
    p.add_argument("--model", default="default", help="built folder, Hugging Face folder, .gguf or 'default'")
    p.add_argument("--compare", choices=[GENAI], help="also measure this engine on the same folder")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds, one fresh process per engine and round")
    p.add_argument("--decode-tokens", type=int, default=128, help="greedy decode steps, EOS ignored")
    p.add_argument("--threads", type=int, nargs="+", default=[2],
                   help="intra-op threads for every engine; several values are measured one after another")
    p.add_argument("--reps", type=int, default=3, help="TTFT and prefill repetitions inside each process (median)")
    p.add_argument("--json", type=Path, help="write all rounds and medians to this file")
    p.add_argument("--concurrency", help="instead: aggregate throughput with N concurrent requests, e.g. 1,4,8,16,32 "
                                         "(against onnxruntime-genai's static batches of 16 with --compare)")


def run(args) -> int:
    from ..model_resolver import resolve_model

    if args.rounds < 1 or args.decode_tokens < 1 or args.reps < 1 or min(args.threads) < 0:
        raise ValueError("--rounds, --decode-tokens and --reps must be >= 1, --threads >= 0")
    folder = resolve_model(args.model)
    if args.concurrency:
        from ..load_benchmark import scaling

        levels = [int(x) for x in args.concurrency.split(",")]
        rows = scaling(str(folder), levels, args.decode_tokens, args.rounds, bool(args.compare))
        if args.json:
            args.json.write_text(json.dumps({"model": str(folder), "concurrency": rows}, indent=2) + "\n")
        return 0
    engines = (OURS, args.compare) if args.compare else (OURS,)
    workload = load_workload(folder, args.decode_tokens, args.reps)
    print(f"model folder: {folder}")
    results = []
    for threads in args.threads:
        c = compare(folder, engines, threads, args.rounds, workload,
                    progress=lambda s: print(s, file=sys.stderr, flush=True))
        results.append(c)
        print(format_table(c, engines))
        print()
    if len(results) > 1:
        for engine in engines:
            best = max(results, key=lambda c: c.median(engine, "decode_tps"))
            rates = ", ".join(f"{c.threads}: {c.median(engine, 'decode_tps'):.1f}" for c in results)
            print(f"{engine}: decode tok/s by threads {rates}; fastest with {best.threads}")
    if args.json:
        args.json.write_text(json.dumps({"model": str(folder), "engines": list(engines), "decode_tokens":
                                         args.decode_tokens, "reps": args.reps,
                                         "results": [c.to_json() for c in results]}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
