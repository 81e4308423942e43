"""`llm-runtime batch IN.jsonl -o OUT.jsonl --model M`: offline generation, resumable after any stop."""
from __future__ import annotations

import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from .llm_args import add_llm_arguments, llm_config

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


def add_arguments(p) -> None:
    p.add_argument("input", type=Path, help="JSONL requests: {custom_id, prompt|messages, ...} or OpenAI batch lines")
    p.add_argument("-o", "--output", required=True, type=Path, help="JSONL results, appended; re-running resumes")
    add_llm_arguments(p)
    ray = p.add_argument_group("Ray (the ray extra): the same job on Ray Data actors")
    ray.add_argument("--ray", action="store_true", help="run on a Ray cluster (input and output: JSONL or .parquet)")
    ray.add_argument("--address", help="the cluster: auto, ray://HOST:10001 (default: a local cluster)")
    ray.add_argument("--replicas", type=int, default=1, help="actors, each loading the model once (default 1)")
    ray.add_argument("--threads-per-replica", dest="threads", type=int, help="the same as --threads: onnxruntime "
                                                                              "threads per actor")


def run(args) -> int:
    if args.ray:
        return run_on_ray(args)
    from tqdm import tqdm

    from llm_runtime.batch.job import BatchJob
    from llm_runtime.batch.output import BatchOutput
    from llm_runtime.llm import LLM
    from llm_runtime.models.resolver import model_name

    config = llm_config(args)
    if not args.input.is_file():
        raise FileNotFoundError(f"input file not found: {args.input}")
    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        output = BatchOutput(args.output)  # locks the file and cuts off a torn last line
    except OSError as e:
        raise FileNotFoundError(f"cannot write {args.output}: {e.strerror or e}") from None
    try:
        llm = LLM(config)
        name = model_name(config.model)
        total = _count_lines(args.input)
        before = len(output.answered)
        bar = tqdm(total=total, initial=min(before, total), unit="req", desc="batch", file=sys.stderr,
                   dynamic_ncols=True)
        start, generated = time.perf_counter(), llm.engine.stats().generated_tokens

        def on_line() -> None:
            rate = (llm.engine.stats().generated_tokens - generated) / (time.perf_counter() - start)
            bar.set_postfix_str(f"{rate:.0f} tok/s", refresh=False)
            bar.update()

        stop = threading.Event()
        with _stop_on_signals(stop) as signals:
            job = BatchJob(llm, args.input, output, name, config.engine.max_concurrency, stop, on_line)
            summary = job.run()
        elapsed, generated = time.perf_counter() - start, llm.engine.stats().generated_tokens - generated
        bar.close()
        if config.speculation is not None:
            print(_speculation_summary(llm.engine.stats()), file=sys.stderr)
    finally:
        output.close()
    if summary.duplicates:
        shown = ", ".join(summary.duplicates[:5]) + (", ..." if len(summary.duplicates) > 5 else "")
        print(f"warning: {len(summary.duplicates)} duplicate custom_id line(s) ignored: {shown}", file=sys.stderr)
    counts = (f"{before + summary.written} done ({summary.written} written, {before} already done, "
              f"{summary.errors} errors) in {args.output}; {generated} completion tokens in {elapsed:.1f} s "
              f"({generated / max(elapsed, 1e-9):.1f} tokens/s)")
    if summary.interrupted:
        print(f"stopped: {counts}; run the same command again to resume", file=sys.stderr)
        return EXIT_CODES.get(signals[0], 130) if signals else 130
    print(counts, file=sys.stderr)
    return 0


def _speculation_summary(stats) -> str:
    """What the drafts did: verifications, tokens emitted per verification, drafted (accepted) per source."""
    sources = ", ".join(f"{source} {drafted} ({accepted})" for source, drafted, accepted in stats.draft_sources
                        if drafted)
    return (f"speculation: {stats.verifications} verifications, "
            f"{1 + stats.accepted_tokens / max(stats.verifications, 1):.2f} tokens per verification; drafted "
            f"(accepted) by source: {sources or 'none'}")


@contextmanager
def _stop_on_signals(stop: threading.Event):
    """SIGINT / SIGTERM set `stop` (the signals received are yielded); a second one acts as it normally would."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def handler(signum, _frame):
        got.append(signum)
        stop.set()
        _restore(previous)

    previous = {s: signal.signal(s, handler) for s in EXIT_CODES}
    try:
        yield got
    finally:
        _restore(previous)


def _restore(handlers: dict) -> None:
    for s, h in handlers.items():
        signal.signal(s, h if h is not None else signal.SIG_DFL)


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def run_on_ray(args) -> int:
    """`--ray`: the job on Ray Data (llm_runtime.ray.file_job); Ray's own progress bars, then a summary."""
    from llm_runtime.ray import run_file
    from llm_runtime.ray.file_job import print_summary

    summary = run_file(args.input, args.output, llm_config(args), address=args.address, replicas=args.replicas)
    print_summary(summary, args.output)
    return 0
