"""Single stream: time to first token, prefill and decode speed and peak memory of our runtime and of
onnxruntime-genai on one built folder, each measured in a fresh process, alternating over rounds.

    python benchmarks/single_stream.py --model default [--compare onnxruntime-genai] [--rounds 3] [--threads 2 1]
                                       [--decode-tokens 128] [--reps 3] [--json OUT]
    python benchmarks/single_stream.py --model default --before OLD_CHECKOUT/.venv/bin/python [--rounds 6]

`--before` measures our runtime twice, alternating: this checkout ("ours") and the interpreter of another
checkout ("before": its installed package, driven by this script), for before/after tables of a change.

Ours is driven through the public API (`LLM.stream_ids`, `reset_prefix_cache`); the step timer wraps the LLM's
runner to split a decode step into the graph call and our Python. Top-level imports are the standard library
only, so that a child measuring onnxruntime-genai does not import our package into the process whose peak RSS
it reports.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from launcher import child_main, run_child

OURS, GENAI, BEFORE = "ours", "onnxruntime-genai", "before"


@dataclass(frozen=True)
class Workload:
    """What every engine is asked to do, identical text for all."""

    chat_prompt: str  # the short user message, already rendered with the chat template
    long_prompt: str  # about 1,000 tokens of plain text
    decode_tokens: int = 128  # greedy decode steps after the first token, EOS ignored
    reps: int = 3  # repetitions of each time-to-first-token / prefill measurement inside one process


@dataclass
class Measurement:
    """One engine, one process. Times in seconds, rates in tokens per second."""

    engine: str
    threads: int
    load_s: float
    os_threads: int  # threads of the process after loading (the intra-op pool plus the main thread)
    chat_prompt_tokens: int
    ttft_s: float  # tokenize the rendered chat prompt, prefill, pick the first token
    short_prefill_tps: float
    long_prompt_tokens: int
    long_prefill_tps: float
    decode_tps: float
    decode_cpu_ms: float  # CPU time of the whole process per decode token: less disturbed by a busy machine
    peak_rss_mib: float
    text: str  # the greedy continuation of the chat prompt, to check both engines agree
    load_average: float  # 1-minute load average when the process started: a busy machine shows here
    step: dict | None = None  # ours only: where the time of one decode step goes


def load_workload(folder: str | Path, decode_tokens: int = 128, reps: int = 3) -> Workload:
    """The benchmark prompts of benchmarks/prompts/; the chat one rendered with the folder's template."""

    from llm_runtime.chat.template import ChatTemplate
    from llm_runtime.models.folder import ModelFolder

    prompts = Path(__file__).resolve().parent / "prompts"
    message = (prompts / "bench_short_chat.txt").read_text(encoding="utf-8").strip()
    long_text = (prompts / "bench_long.txt").read_text(encoding="utf-8")
    template = ChatTemplate.for_model(ModelFolder.open(folder))
    chat = template.render([{"role": "user", "content": message}], add_generation_prompt=True)
    return Workload(chat, long_text, decode_tokens, reps)


# --- inside the child process ---------------------------------------------------------------------------------

class StepTimer:
    """Time spent inside `runner.run` and inside the session's `run_with_iobinding`, by wrapping both bound methods
    with instance attributes (runner.py is left as it is)."""

    def __init__(self, runner):
        self.run_s = self.session_s = 0.0
        self.calls = 0
        runner.run = self._timed(runner.run, "run_s", count=True)
        runner.session.run_with_iobinding = self._timed(runner.session.run_with_iobinding, "session_s")

    def _timed(self, fn: Callable, attr: str, count: bool = False) -> Callable:
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                setattr(self, attr, getattr(self, attr) + time.perf_counter() - start)
                self.calls += count
        return timed

    def snapshot(self) -> tuple[float, float, int]:
        return self.run_s, self.session_s, self.calls


def step_breakdown(loop_s: float, before: tuple, after: tuple) -> dict:
    """Split the decode loop's wall time into the graph call, the runner's own Python, and the rest of the loop."""
    run_s, session_s, steps = (a - b for a, b in zip(after, before))
    per = 1e6 / max(steps, 1)
    return {"steps": steps, "step_us": loop_s * per, "session_us": session_s * per,
            "runner_python_us": (run_s - session_s) * per, "loop_python_us": (loop_s - run_s) * per,
            "python_share": (loop_s - session_s) / loop_s if loop_s else 0.0}


@dataclass
class Contender:
    """What `measure` needs of a runtime: tokenizing, a greedy token stream that ignores EOS, detokenizing."""

    encode_chat: Callable[[str], list[int]]  # a rendered chat prompt: its special tokens are already in the text
    encode_text: Callable[[str], list[int]]
    generate: Callable[[list[int], int], Iterator[int]]  # (prompt ids, n) -> n token ids, as they come
    decode: Callable[[list[int]], str]
    runner: object = None  # ours: the ModelRunner whose graph calls are timed


def _ours(folder: str, threads: int) -> Contender:
    from llm_runtime import LLM, SamplingParams  # the public names: a --before checkout has them too

    llm = LLM(folder, threads=threads)

    def generate(ids: list[int], n: int) -> Iterator[int]:
        params = SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)
        llm.reset_prefix_cache()  # the prompt is computed whole, as onnxruntime-genai computes it
        for chunk in llm.stream_ids(ids, params):
            yield from chunk.token_ids

    return Contender(lambda text: llm.encode(text, special=False), llm.encode, generate, llm.tokenizer.decode, llm.runner)


def _genai(folder: str, threads: int) -> Contender:
    import onnxruntime_genai as og

    config = og.Config(folder)
    if threads:
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
    model = og.Model(config)
    tokenizer = og.Tokenizer(model)

    def generate(ids: list[int], n: int) -> Iterator[int]:
        params = og.GeneratorParams(model)
        # min_length = max_length suppresses EOS, as ignore_eos does for ours
        params.set_search_options(max_length=len(ids) + n, min_length=len(ids) + n, do_sample=False)
        generator = og.Generator(model, params)
        generator.append_tokens(ids)
        stream = tokenizer.create_stream()  # stream text as ours does, so both pay for detokenizing
        while not generator.is_done():
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            stream.decode(token)
            yield token

    def encode(text: str) -> list[int]:
        return [int(x) for x in tokenizer.encode(text)]

    return Contender(encode, encode, generate, tokenizer.decode)


def _first_token_s(e: Contender, ids: list[int]) -> float:
    """Seconds from the ids to the first generated token: prefill plus picking one token."""
    start = time.perf_counter()
    for _ in e.generate(ids, 1):
        pass
    return time.perf_counter() - start


def _decode(e: Contender, ids: list[int], n: int, timer: StepTimer | None) -> tuple[list[int], float, float, dict | None]:
    """Generate 1 + n tokens; (ids, wall seconds and CPU seconds of the n decode steps, ours: step breakdown)."""
    out, wall, cpu, before = [], 0.0, 0.0, None
    for token in e.generate(ids, n + 1):
        out.append(token)
        if len(out) == 1:  # the prefill is behind us: time the decode steps only
            wall, cpu = time.perf_counter(), time.process_time()
            before = timer.snapshot() if timer else None
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return out, wall, cpu, step_breakdown(wall, before, timer.snapshot()) if timer else None


def peak_rss_mib() -> float:
    """This process's peak resident set size (VmHWM)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(engine: str, folder: str, threads: int, w: Workload) -> Measurement:
    """Load `engine` on `folder` and measure it once: TTFT, short and long prefill, decode, peak RSS."""
    load_average = os.getloadavg()[0]
    start = time.perf_counter()
    e = (_ours if engine == OURS else _genai)(folder, threads)
    load_s = time.perf_counter() - start
    os_threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 0
    timer = StepTimer(e.runner) if e.runner is not None else None
    list(e.generate(e.encode_chat(w.chat_prompt), 8))  # warm-up: first-call allocations and kernel selection

    ttft, short = [], []
    for _ in range(w.reps):
        start = time.perf_counter()
        ids = e.encode_chat(w.chat_prompt)
        tokenize_s = time.perf_counter() - start
        first_s = _first_token_s(e, ids)
        ttft.append(tokenize_s + first_s)
        short.append(len(ids) / first_s)
    long_ids = e.encode_text(w.long_prompt)
    long = [len(long_ids) / _first_token_s(e, long_ids) for _ in range(w.reps)]
    out, wall, cpu, step = _decode(e, ids, w.decode_tokens, timer)
    steps = len(out) - 1
    return Measurement(engine, threads, load_s, os_threads, len(ids), statistics.median(ttft),
                       statistics.median(short), len(long_ids), statistics.median(long), steps / wall,
                       1000 * cpu / steps, peak_rss_mib(), e.decode(out), load_average, step)


def child(engine: str, folder: str, threads: int, workload: dict) -> dict:
    """In the child process: one measurement, as a JSON-able dict."""
    return asdict(measure(engine, folder, threads, Workload(**workload)))


# --- in the parent --------------------------------------------------------------------------------------------

def measure_in_child(engine: str, folder: str | Path, threads: int, w: Workload,
                     before: str = sys.executable) -> Measurement:
    """Measure `engine` once in a fresh Python process; BEFORE is ours under the `before` interpreter."""
    if engine == BEFORE:
        m = Measurement(**run_child(__file__, OURS, str(folder), threads, asdict(w), python=before))
        m.engine = BEFORE
        return m
    return Measurement(**run_child(__file__, engine, str(folder), threads, asdict(w)))


# (label, Measurement field, scale for printing)
ROWS = (("TTFT, short chat prompt (ms)", "ttft_s", 1000.0), ("prefill, short chat (tok/s)", "short_prefill_tps", 1),
        ("prefill, long prompt (tok/s)", "long_prefill_tps", 1), ("decode (tok/s)", "decode_tps", 1),
        ("decode CPU per token (ms)", "decode_cpu_ms", 1), ("peak RSS (MiB)", "peak_rss_mib", 1),
        ("load (s)", "load_s", 1))
METRICS = tuple(metric for _, metric, _ in ROWS)


@dataclass
class Comparison:
    """All rounds of all engines at one thread count, and their medians."""

    threads: int
    rounds: list[dict[str, Measurement]] = field(default_factory=list)

    def median(self, engine: str, metric: str) -> float:
        return statistics.median(getattr(r[engine], metric) for r in self.rounds if engine in r)

    def best(self, engine: str, metric: str) -> float:
        """The least disturbed round: the lowest time or memory, the highest rate."""
        values = [getattr(r[engine], metric) for r in self.rounds if engine in r]
        return max(values) if metric.endswith("_tps") else min(values)

    def median_step(self, key: str) -> float | None:
        values = [r[OURS].step[key] for r in self.rounds if OURS in r and r[OURS].step]
        return statistics.median(values) if values else None

    def to_json(self) -> dict:
        engines = list(self.rounds[0]) if self.rounds else []
        return {"threads": self.threads,
                "medians": {e: {m: self.median(e, m) for m in METRICS} for e in engines},
                "best": {e: {m: self.best(e, m) for m in METRICS} for e in engines},
                "step_medians": {k: self.median_step(k) for k in
                                 ("step_us", "session_us", "runner_python_us", "loop_python_us", "python_share")},
                "rounds": [{e: asdict(m) for e, m in r.items()} for r in self.rounds]}


def compare(folder: str | Path, engines: tuple[str, ...], threads: int, rounds: int, w: Workload,
            progress: Callable[[str], None] = lambda s: None, before: str = sys.executable) -> Comparison:
    """Alternate the engines for `rounds` rounds (the order flips every round), one fresh process per measurement."""
    result = Comparison(threads)
    for i in range(rounds):
        order = engines if i % 2 == 0 else tuple(reversed(engines))
        row = {}
        for engine in order:
            progress(f"threads={threads} round {i + 1}/{rounds}: {engine}")
            row[engine] = measure_in_child(engine, folder, threads, w, before)
        result.rounds.append({e: row[e] for e in engines})
    return result


def format_table(c: Comparison, engines: tuple[str, ...]) -> str:
    """Medians per engine and, with two engines, the ratio ours/theirs of the medians and of the best rounds."""
    pair = len(engines) == 2
    head = ["metric (median)"] + list(engines) + (["ours/theirs", "(best rounds)"] if pair else [])
    lines = [head]
    for label, metric, scale in ROWS:
        values = [c.median(e, metric) for e in engines]
        line = [label] + [f"{v * scale:.2f}" if v * scale < 10 else f"{v * scale:.1f}" for v in values]
        if pair:
            line += [f"{values[0] / values[1]:.2f}", f"{c.best(engines[0], metric) / c.best(engines[1], metric):.2f}"]
        lines.append(line)
    first = c.rounds[0]
    lines.append(["prompt tokens (chat / long)"] + [f"{first[e].chat_prompt_tokens} / {first[e].long_prompt_tokens}"
                                                     for e in engines] + ["", ""] * pair)
    lines.append(["process threads after load"] + [str(first[e].os_threads) for e in engines] + ["", ""] * pair)
    loads = [max(r[e].load_average for r in c.rounds) for e in engines]
    lines.append(["max 1-min load average"] + [f"{v:.2f}" for v in loads] + ["", ""] * pair)
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    out = [f"threads={c.threads}, {len(c.rounds)} round(s)"]
    out += ["  ".join(cell.ljust(wd) if i == 0 else cell.rjust(wd) for i, (cell, wd) in enumerate(zip(r, widths)))
            for r in lines]
    if c.median_step("step_us") is not None:
        out.append(f"ours, one decode step: {c.median_step('step_us'):.0f} us = graph call "
                   f"{c.median_step('session_us'):.0f} us + runner Python {c.median_step('runner_python_us'):.0f} us "
                   f"+ loop Python (sampling, detokenizing, generator) {c.median_step('loop_python_us'):.0f} us; "
                   f"Python overhead {100 * c.median_step('python_share'):.1f}% of the step")
    texts = {e: first[e].text for e in engines}
    if pair and len(set(texts.values())) > 1:
        out.append("note: the engines' greedy continuations differ")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="built folder, Hugging Face folder, .gguf or 'default'")
    ap.add_argument("--compare", choices=[GENAI], help="also measure this runtime on the same folder")
    ap.add_argument("--before", metavar="PYTHON",
                    help="also measure our runtime under this interpreter (another checkout's venv), as 'before'")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds, one fresh process per runtime and round")
    ap.add_argument("--decode-tokens", type=int, default=128, help="greedy decode steps, EOS ignored")
    ap.add_argument("--threads", type=int, nargs="+", default=[2],
                    help="intra-op threads for every runtime; several values are measured one after another")
    ap.add_argument("--reps", type=int, default=3, help="TTFT and prefill repetitions inside each process (median)")
    ap.add_argument("--json", type=Path, help="write all rounds and medians to this file")
    args = ap.parse_args()
    if args.rounds < 1 or args.decode_tokens < 1 or args.reps < 1 or min(args.threads) < 0:
        ap.error("--rounds, --decode-tokens and --reps must be >= 1, --threads >= 0")
    from llm_runtime.models.resolver import resolve_model

    folder = resolve_model(args.model)
    if args.compare and args.before:
        ap.error("--compare and --before are measured separately")
    engines = (OURS, GENAI) if args.compare else (OURS, BEFORE) if args.before else (OURS,)
    workload = load_workload(folder, args.decode_tokens, args.reps)
    print(f"model folder: {folder}")
    results = []
    for threads in args.threads:
        c = compare(folder, engines, threads, args.rounds, workload,
                    progress=lambda s: print(s, file=sys.stderr, flush=True), before=args.before or sys.executable)
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


if __name__ == "__main__":
    child_main(child) or main()
