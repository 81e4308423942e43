"""The suffix cache (`--speculation suffix`) against no speculation on four workloads, the same greedy replies checked.

    python benchmarks/suffix_cache.py [--model default] [--rounds 1] [--threads 2] [--num-speculative-tokens 8]
                                      [--workloads extraction,agent,chat,concurrent] [--arms plain,suffix]
                                      [--docs 100] [--batch-concurrency 16] [--near-ties]

extraction: one JSON schema over `--docs` short synthetic documents (person records in prose) through
`llm-runtime batch` (a fresh process per run, `--max-concurrency` from --batch-concurrency; the prompt asks for
JSON, no response_format), tokens/s from the command's own summary (first submit to last reply; an untimed run warms the page cache first).
agent: the recorded multi-turn tool-calling session (benchmarks/prompts/suffix_agent_trace.json, from
benchmarks/suffix_agent_trace.py) replayed request by request. chat: 16 open chat requests one after another. Both
report end-to-end tokens/s (prompts included) and decode tokens/s ((tokens - 1) / (first token to last), summed
over the requests). concurrent: 8 open chat requests submitted together, aggregate tokens/s. Each run of the in-process workloads gets a fresh engine (an
empty suffix cache); the arms alternate (plain first in even rounds). Greedy; the replies of the arms are asserted
to be the same (on an int4 build a verification call may part from a one-token decode on a near-tie:
`--near-ties` counts the replies that differ instead). Reported per workload: tokens/s of each arm and their
ratio, acceptance, tokens per verification, drafted (accepted) tokens by source, and the load average. On a
shared machine wall time moves with the other jobs, so tokens per CPU second of the process are given too
(`time.process_time`; for the batch process its whole CPU time, loading included, from `getrusage`).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from llm_runtime import LLM, SamplingParams
from llm_runtime.models.resolver import resolve_model
from llm_runtime.speculation import SpeculationConfig
from llm_runtime.tools.request import ToolRequest

HERE = Path(__file__).parent
FIRST = ["Alice", "Bruno", "Chen", "Dana", "Elif", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kavya", "Liam", "Mara",
         "Nils", "Olga", "Pedro", "Qin", "Rosa", "Sven", "Tara"]
LAST = ["Smith", "Garcia", "Novak", "Tanaka", "Okafor", "Rossi", "Berg", "Dubois", "Khan", "Silva", "Larsen",
        "Moreau", "Weber", "Costa", "Ivanova"]
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne", "Wonka", "Tyrell",
             "Cyberdyne", "Soylent"]
ROLES = ["engineer", "designer", "accountant", "nurse", "teacher", "chef", "pilot", "lawyer", "analyst", "architect"]
CITIES = ["Paris", "Berlin", "Lisbon", "Oslo", "Tokyo", "Nairobi", "Lima", "Toronto", "Madrid", "Vienna"]
SCHEMA = '{"name": string, "age": integer, "company": string, "role": string, "city": string}'


@dataclass
class Run:
    tokens: int
    seconds: float
    replies: list
    stats: dict = field(default_factory=dict)  # verifications, drafted, accepted, sources: {source: (d, a)}
    decode_tokens: int = 0  # one-by-one workloads: tokens after each reply's first
    decode_seconds: float = 0.0  # and the time from each reply's first token to its last
    cpu_seconds: float = 0.0  # CPU time of the process that generated

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds


def documents(n: int) -> list[str]:
    r = random.Random(0)
    out = []
    for _ in range(n):
        name, co, role = f"{r.choice(FIRST)} {r.choice(LAST)}", r.choice(COMPANIES), r.choice(ROLES)
        city, age = r.choice(CITIES), r.randrange(22, 66)
        out.append(r.choice([f"{name} is a {age}-year-old {role} who works for {co} in {city}.",
                             f"Based in {city}, {name} ({age}) has joined {co} as a {role}.",
                             f"{co} hired {name}, {age}, to work as a {role} at its {city} office."]))
    return out


def speculation(args, arm: str) -> SpeculationConfig | None:
    return None if arm == "plain" else SpeculationConfig(arm, num_speculative_tokens=args.num_speculative_tokens)


def engine_stats(llm: LLM) -> dict:
    s = llm.engine.stats()
    return {"verifications": s.verifications, "drafted": s.draft_tokens, "accepted": s.accepted_tokens,
            "sources": {src: (d, a) for src, d, a in s.draft_sources if d}}


def extraction(args, arm: str, folder: Path) -> Run:
    """`llm-runtime batch` over the documents, in a process of its own."""
    lines = [{"custom_id": f"doc-{i}", "max_tokens": 64, "temperature": 0,
              "messages": [{"role": "user", "content": f"Extract the person from the text as one JSON object with "
                                                       f"exactly these keys: {SCHEMA}. Reply with the JSON only."
                                                       f"\n\nText: {doc}"}]}
             for i, doc in enumerate(documents(args.docs))]
    src, out = folder / "in.jsonl", folder / f"out-{arm}-{time.monotonic_ns()}.jsonl"
    src.write_text("".join(json.dumps(line) + "\n" for line in lines))
    flags = [] if arm == "plain" else ["--speculation", arm, "--num-speculative-tokens",
                                       str(args.num_speculative_tokens)]
    cpu = _children_cpu()
    done = subprocess.run([sys.executable, "-m", "llm_runtime.cli.main", "batch", str(src), "-o", str(out),
                           "--model", args.model, "--threads", str(args.threads), "--max-concurrency",
                           str(args.batch_concurrency), *flags],
                          capture_output=True, text=True, check=True)
    summary = re.search(r"(\d+) completion tokens in ([\d.]+) s", done.stderr)
    replies = {json.loads(line)["custom_id"]: json.loads(line)["response"]["body"]["choices"][0]["message"]["content"]
               for line in out.read_text().splitlines()}
    stats = {}
    if spec := re.search(r"speculation: (\d+) verifications.*by source: (.*)", done.stderr):
        sources = {m[0]: (int(m[1]), int(m[2])) for m in re.findall(r"(\w+) (\d+) \((\d+)\)", spec.group(2))}
        stats = {"verifications": int(spec.group(1)), "drafted": sum(d for d, _ in sources.values()),
                 "accepted": sum(a for _, a in sources.values()), "sources": sources}
    return Run(int(summary.group(1)), float(summary.group(2)), [replies[k] for k in sorted(replies)], stats,
               cpu_seconds=_children_cpu() - cpu)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(llm: LLM, run: Run, ids: list[int], params: SamplingParams) -> None:
    """Stream one reply into `run`: its tokens, and its decode time after the first token."""
    tokens, first = [], None
    for chunk in llm.stream_ids(ids, params):
        tokens += chunk.token_ids
        if first is None and tokens:
            first, got = time.perf_counter(), len(tokens)
    run.replies.append(tokens)
    run.tokens += len(tokens)
    if first is not None:
        run.decode_tokens += len(tokens) - got
        run.decode_seconds += time.perf_counter() - first


def agent(args, arm: str, llm: LLM) -> Run:
    """The requests as LLM.chat sends them with tools: the tool prompt, the choice's constraint."""
    trace = json.loads((HERE / "prompts" / "suffix_agent_trace.json").read_text())
    params, run = SamplingParams(max_tokens=trace["max_tokens"], temperature=0), Run(0, 0.0, [])
    start = time.perf_counter()
    for request in trace["requests"]:
        tools = ToolRequest.of(llm.template, trace["tools"], request["tool_choice"], True)
        ids = llm.encode(tools.prompt(llm.template, request["messages"]), special=False)
        timed(llm, run, ids, tools.params(params, llm.tokenizer))
    run.seconds = time.perf_counter() - start
    return run


def chat_prompts(llm: LLM, first: int, n: int) -> list[list[int]]:
    topics = (HERE / "prompts" / "bench_topics.txt").read_text().split("\n")
    return [llm.encode(llm.render_chat([{"role": "user", "content": f"Write a short paragraph about {t}."}]),
                       special=False) for t in topics[first:first + n]]


def chat(args, arm: str, llm: LLM) -> Run:
    params, run = SamplingParams(max_tokens=96, temperature=0), Run(0, 0.0, [])
    start = time.perf_counter()
    for ids in chat_prompts(llm, 0, 16):
        timed(llm, run, ids, params)
    run.seconds = time.perf_counter() - start
    return run


def concurrent(args, arm: str, llm: LLM) -> Run:
    params, prompts = SamplingParams(max_tokens=96, temperature=0), chat_prompts(llm, 16, 8)
    start = time.perf_counter()
    replies = [h.result().token_ids for h in [llm.submit(ids, params) for ids in prompts]]
    return Run(sum(map(len, replies)), time.perf_counter() - start, replies)


def run_arm(args, workload: str, arm: str, folder: Path) -> Run:
    if workload == "extraction":
        return extraction(args, arm, folder)
    llm = LLM(args.model, threads=args.threads, speculation=speculation(args, arm))
    try:
        cpu = time.process_time()
        run = globals()[workload](args, arm, llm)
        run.cpu_seconds = time.process_time() - cpu
        run.stats = engine_stats(llm) if arm != "plain" else {}
        return run
    finally:
        llm.engine.shutdown()
        del llm
        gc.collect()


def report(workload: str, runs: dict[str, list[Run]], differ: int, total: int, load: tuple) -> None:
    rates = {arm: sum(r.tokens for r in rs) / sum(r.seconds for r in rs) for arm, rs in runs.items()}
    plain = rates.pop("plain")
    print(f"\n## {workload}: plain {plain:.1f} tok/s; " + "; ".join(
        f"{arm} {rate:.1f} tok/s ({rate / plain:.2f}x)" for arm, rate in rates.items()))
    cpu = {arm: sum(r.tokens for r in rs) / sum(r.cpu_seconds for r in rs) for arm, rs in runs.items()}
    base = cpu.pop("plain")
    print(f"per CPU second: plain {base:.1f} tok; " + "; ".join(f"{arm} {rate:.1f} tok ({rate / base:.2f}x)"
                                                              for arm, rate in cpu.items()))
    decode = {arm: sum(r.decode_tokens for r in rs) / max(sum(r.decode_seconds for r in rs), 1e-9)
              for arm, rs in runs.items()}
    if decode["plain"]:
        base = decode.pop("plain")
        print(f"decode: plain {base:.1f} tok/s; " + "; ".join(f"{arm} {rate:.1f} tok/s ({rate / base:.2f}x)"
                                                            for arm, rate in decode.items()))
    for arm in rates:
        s = [r.stats for r in runs[arm]]
        v, d, a = (sum(x.get(key, 0) for x in s) for key in ("verifications", "drafted", "accepted"))
        sources: dict[str, list[int]] = {}
        for x in s:
            for src, (sd, sa) in x.get("sources", {}).items():
                sources.setdefault(src, [0, 0])
                sources[src][0] += sd
                sources[src][1] += sa
        won = max(sources, key=lambda k: sources[k][1]) if sources else "none"
        print(f"{arm}: acceptance {a / max(d, 1):.2f}, {1 + a / max(v, 1):.2f} tokens per verification, "
              f"drafted (accepted) by source: " + (", ".join(f"{k} {sd} ({sa})" for k, (sd, sa) in sources.items())
                                                   or "none") + f"; most accepted: {won}")
    print(f"{differ} of {total} replies differ; load average {load[0]} -> {load[1]}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--num-speculative-tokens", type=int, default=8)
    ap.add_argument("--workloads", default="extraction,agent,chat,concurrent")
    ap.add_argument("--arms", default="plain,suffix", help="plain first; the others are speculation methods")
    ap.add_argument("--docs", type=int, default=100)
    ap.add_argument("--batch-concurrency", type=int, default=16, help="extraction: the batch's --max-concurrency")
    ap.add_argument("--near-ties", action="store_true", help="count differing replies instead of asserting")
    args = ap.parse_args()
    args.model = str(resolve_model(args.model))
    arms = args.arms.split(",")
    print(f"model {args.model}, threads {args.threads}, num_speculative_tokens {args.num_speculative_tokens}, "
          f"batch concurrency {args.batch_concurrency}, "
          f"{args.rounds} round(s), uptime: {os.popen('uptime').read().strip()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        if "extraction" in args.workloads:  # untimed: the first process to read the model pays for the page cache
            extraction(argparse.Namespace(**{**vars(args), "docs": 2}), "plain", Path(tmp))
        for workload in args.workloads.split(","):
            load_before, runs, differ, total = os.getloadavg()[0], {arm: [] for arm in arms}, 0, 0
            for r in range(args.rounds):
                order = arms if r % 2 == 0 else arms[::-1]
                got = {arm: run_arm(args, workload, arm, Path(tmp)) for arm in order}
                for arm in arms:
                    runs[arm].append(got[arm])
                    print(f"{workload} round {r + 1} {arm}: {got[arm].tokens} tokens in {got[arm].seconds:.1f} s, "
                          f"{got[arm].rate:.1f} tok/s, {got[arm].cpu_seconds:.1f} CPU s, load "
                          f"{os.getloadavg()[0]:.1f}", flush=True)
                for arm in arms[1:]:
                    pairs = list(zip(got["plain"].replies, got[arm].replies))
                    bad = sum(a != b for a, b in pairs)
                    assert args.near_ties or not bad, f"{workload}: {bad} replies differ with {arm}"
                    differ, total = differ + bad, total + len(pairs)
            report(workload, runs, differ, total, (load_before, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
