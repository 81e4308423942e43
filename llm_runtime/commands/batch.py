"""`llm-runtime batch IN.jsonl -o OUT.jsonl --model M`: offline generation, resumable after any stop."""
from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

from tqdm import tqdm

from .sampling_args import add_model_arguments

HELP = "generate for every line of a JSONL file (resumable; OpenAI batch output format)"


def add_arguments(p) -> None:
    p.add_argument("input", type=Path, help="JSONL requests: {custom_id, prompt|messages, ...} or OpenAI batch lines")
    p.add_argument("-o", "--output", required=True, type=Path, help="JSONL results, appended; re-running resumes")
    p.add_argument("--max-concurrency", type=int, default=16, help="requests in flight at once")
    add_model_arguments(p)


def run(args) -> int:
    from ..batch_job import run_batch
    from ..llm import LLM

    if not args.input.is_file():
        raise FileNotFoundError(f"input file not found: {args.input}")
    if args.max_concurrency < 1:
        raise ValueError("--max-concurrency must be >= 1")
    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.open("a").close()
    except OSError as e:
        raise FileNotFoundError(f"cannot write {args.output}: {e.strerror}") from None
    total = sum(1 for line in args.input.open(encoding="utf-8") if line.strip())
    llm = LLM(args.model, provider=args.provider, threads=args.threads, max_running=args.max_concurrency)
    stop, got = threading.Event(), []

    def on_signal(signum, _frame):
        got.append(signum)
        stop.set()

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, on_signal)
    bar = tqdm(total=total, unit="req", desc="batch", file=sys.stderr)
    start, tokens = time.perf_counter(), [0]

    def progress(n: int) -> None:
        tokens[0] += n
        bar.set_postfix_str(f"{tokens[0] / (time.perf_counter() - start):.0f} tok/s")
        bar.update()

    summary = run_batch(llm, args.input, args.output, args.max_concurrency, stop, progress)
    bar.close()
    if summary.duplicates:
        print(f"warning: {len(summary.duplicates)} duplicate custom_id(s) ignored: "
              f"{', '.join(summary.duplicates[:5])}", file=sys.stderr)
    print(f"{summary.done} written, {summary.skipped} already done, {summary.errors} errors -> {args.output}",
          file=sys.stderr)
    if summary.interrupted:
        print("stopped early; run the same command again to finish the rest", file=sys.stderr)
        return 143 if got and got[0] == signal.SIGTERM else 130
    return 0
