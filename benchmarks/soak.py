"""Soak test of `llm-runtime serve`: mixed traffic from concurrent clients for a long while, watching the server
process for leaks.

    python benchmarks/soak.py [--model default] [--clients 8] [--minutes 20] [--warmup-minutes 2] [--out FILE.md]
    python benchmarks/soak.py --url http://127.0.0.1:8000 --pid PID --served-model-name NAME ...

Each client loops over a weighted mix: chat (plain, streamed, with tools, JSON mode), legacy completions (n=2,
logprobs), the Responses API (stored, then read back, its input items listed and deleted; and streamed), streams
cut after their first events (the client hangs up: the server must cancel and free the sequence) and bad inputs
(invalid JSON, unknown fields, wrong types, an unknown model, a body over the size limit), all to 127.0.0.1. Every
`--sample-seconds` it reads the server's RSS, open file descriptors and threads from /proc/PID. Reported: those at
the first sample after the warm-up and at the end, request latency p50/p99 over the first and the last
`--window-minutes` after the warm-up, status counts per kind (5xx must be zero), and the engine's running and
waiting sequences once traffic stops. A markdown report goes to stdout and, with --out, to that file.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

import httpx

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]
BAD_BODIES = [b"{not json", b'{"model": "M", "messages": [{"role": "user", "content": "hi"}], "frobnicate": 1}',
              b'{"model": "M", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}',
              b'{"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}',
              b'{"model": "M"}', b'{"model": "M", "messages": [{"role": "user", "content": "hi"}], "n": 1000}',
              b'{"model": "M", "messages": [{"role": "tool", "content": "x"}]}']
KINDS = {"chat": 4, "chat_stream": 4, "completion": 2, "tools": 2, "json_mode": 1, "responses": 2, "responses_stream": 2,
         "cut": 3, "bad": 3}
STATS = ("rss_mib", "fds", "threads")


def proc_stats(pid: int) -> dict:
    """RSS (MiB), open file descriptors and threads of process `pid`, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) / 1024
    threads = int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))
    fds = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            fds[re.sub(r"[0-9]+", "N", os.readlink(f"/proc/{pid}/fd/{fd}"))] += 1
        except OSError:  # closed meanwhile
            pass
    return {"rss_mib": rss, "fds": sum(fds.values()), "threads": threads, "fd_kinds": dict(fds)}


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")


class Soak:
    """The clients' traffic against one server, and what it saw: (time, kind, status, latency) per request."""

    def __init__(self, base: str, model: str, tokens: int):
        self.base, self.model, self.tokens = base, model, tokens
        self.records: list[tuple[float, str, int, float]] = []
        self.errors: Counter = Counter()  # transport failures by kind and exception name

    def _chat(self, **extra) -> dict:
        words = random.choice(["Name a colour.", "Say hello.", "Count to five.", "What is two plus two?"])
        return {"model": self.model, "max_tokens": self.tokens, "messages": [{"role": "user", "content": words}],
                **extra}

    async def one(self, client: httpx.AsyncClient, kind: str) -> None:
        start = time.monotonic()
        try:
            status = await getattr(self, kind)(client)
        except httpx.HTTPError as e:
            self.errors[f"{kind}: {type(e).__name__}"] += 1
            return
        self.records.append((start, kind, status, time.monotonic() - start))

    async def chat(self, c) -> int:
        return (await c.post("/v1/chat/completions", json=self._chat(temperature=0.7))).status_code

    async def chat_stream(self, c) -> int:
        body = self._chat(stream=True, stream_options={"include_usage": True})
        async with c.stream("POST", "/v1/chat/completions", json=body) as r:
            async for _ in r.aiter_lines():
                pass
        return r.status_code

    async def completion(self, c) -> int:
        body = {"model": self.model, "prompt": "Once upon a time", "max_tokens": self.tokens, "n": 2, "logprobs": 2}
        return (await c.post("/v1/completions", json=body)).status_code

    async def tools(self, c) -> int:
        body = self._chat(tools=TOOLS, tool_choice=random.choice(["auto", "required"]))
        body["messages"][0]["content"] = "What is the weather in Paris?"
        return (await c.post("/v1/chat/completions", json=body)).status_code

    async def json_mode(self, c) -> int:
        body = self._chat(response_format={"type": "json_object"})
        return (await c.post("/v1/chat/completions", json=body)).status_code

    async def responses(self, c) -> int:
        r = await c.post("/v1/responses", json={"model": self.model, "input": "Say hello.", "store": True,
                                                "max_output_tokens": self.tokens})
        if r.status_code != 200:
            return r.status_code
        rid = r.json()["id"]
        for follow in (c.get(f"/v1/responses/{rid}"), c.get(f"/v1/responses/{rid}/input_items"),
                       c.delete(f"/v1/responses/{rid}")):
            if (status := (await follow).status_code) != 200:
                return status
        return 200

    async def responses_stream(self, c) -> int:
        body = {"model": self.model, "input": "Name a colour.", "stream": True, "store": False,
                "max_output_tokens": self.tokens}
        async with c.stream("POST", "/v1/responses", json=body) as r:
            async for _ in r.aiter_lines():
                pass
        return r.status_code

    async def cut(self, c) -> int:
        """A long stream the client hangs up on after its first few events."""
        body = self._chat(stream=True, max_tokens=256, ignore_eos=True)
        async with c.stream("POST", "/v1/chat/completions", json=body) as r:
            events = 0
            async for line in r.aiter_lines():
                events += line.startswith("data:")
                if events >= 3:
                    break
        return r.status_code

    async def bad(self, c) -> int:
        if random.random() < 0.05:  # over the 4 MiB body limit: a 413
            return (await c.post("/v1/chat/completions", content=b"x" * (5 << 20))).status_code
        body = random.choice(BAD_BODIES).replace(b'"M"', json.dumps(self.model).encode())
        return (await c.post("/v1/chat/completions", content=body,
                             headers={"content-type": "application/json"})).status_code

    async def client(self, seed: int, until: float) -> None:
        rng = random.Random(seed)
        async with httpx.AsyncClient(base_url=self.base, timeout=300) as c:
            while time.monotonic() < until:
                await self.one(c, rng.choices(list(KINDS), weights=list(KINDS.values()))[0])


async def sample(pid: int | None, until: float, every: float, samples: list[dict], t0: float) -> None:
    while pid and time.monotonic() < until:
        samples.append({"t": time.monotonic() - t0, "load": os.getloadavg()[0], **proc_stats(pid)})
        await asyncio.sleep(every)


def engine_gauges(base: str) -> dict[str, float]:
    text = httpx.get(f"{base}/metrics", timeout=30).text
    names = ("llm_running_sequences", "llm_waiting_sequences")
    return {n: float(m.group(1)) for n in names if (m := re.search(rf"^{n}(?:{{[^}}]*}})? (\S+)$", text, re.M))}


def start_server(args) -> tuple[subprocess.Popen, str, Path]:
    from llm_runtime.models.resolver import resolve_model

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = Path(tempfile.mkdtemp(prefix="soak-"))
    cli = str(Path(sys.executable).parent / "llm-runtime")
    log = open(data / "server.log", "w")
    proc = subprocess.Popen([cli, "serve", "--model", str(resolve_model(args.model)), "--port", str(port),
                             "--served-model-name", args.served_model_name, "--data-dir", str(data / "store")],
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return proc, base, data
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    sys.exit(f"the server did not start: see {data / 'server.log'}")


async def soak(args, base: str, pid: int | None) -> tuple[Soak, list[dict], float, float]:
    s = Soak(base, args.served_model_name, args.tokens)
    t0 = time.monotonic()
    until = t0 + args.minutes * 60
    samples: list[dict] = []
    await asyncio.gather(sample(pid, until + 1, args.sample_seconds, samples, t0),
                         *(s.client(k, until) for k in range(args.clients)))
    return s, samples, t0, time.monotonic()


def report(args, s: Soak, samples: list[dict], t0: float, t1: float, after: dict, base: str, log_text: str) -> str:
    warm = args.warmup_minutes * 60
    window = args.window_minutes * 60
    measured = [x for x in samples if x["t"] >= warm] or samples
    first, last = measured[0], measured[-1]
    statuses: dict[str, Counter] = defaultdict(Counter)
    for _, kind, status, _ in s.records:
        statuses[kind][status] += 1
    server_errors = sum(n for c in statuses.values() for st, n in c.items() if st >= 500)
    ok = [(t - t0, d) for t, kind, status, d in s.records if status < 400 and kind not in ("cut", "bad")]
    early = [d for t, d in ok if warm <= t < warm + window]
    late = [d for t, d in ok if t >= (t1 - t0) - window]
    loads = [x["load"] for x in samples]
    lines = [f"# {datetime.now(timezone.utc):%Y-%m-%d}, soak of `llm-runtime serve`", "",
             f"Command: `python benchmarks/{Path(__file__).name} {shlex.join(sys.argv[1:])}`", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores ({_cpu_name()}); "
             f"load average (1 min) {min(loads, default=0):.1f}-{max(loads, default=0):.1f} over the run "
             f"(the soak's own clients included). Model `{args.model}`, {args.clients} clients, "
             f"{args.minutes:g} min ({args.warmup_minutes:g} min warm-up), {len(s.records)} requests, "
             f"max_tokens {args.tokens}.{' ' + args.note if args.note else ''}", "",
             "| | after warm-up | end | change |", "|---|---|---|---|"]
    for k in STATS:
        change = (last[k] - first[k]) / first[k] * 100 if first[k] else 0.0
        lines.append(f"| {k} | {first[k]:.1f} | {last[k]:.1f} | {change:+.1f}% |")
    lines.append(f"| max RSS (MiB) | | {max(x['rss_mib'] for x in samples):.1f} | |")
    lines.append(f"| latency p50 / p99 (s), {args.window_minutes:g} min windows | {pct(early, 50):.2f} / "
                 f"{pct(early, 99):.2f} | {pct(late, 50):.2f} / {pct(late, 99):.2f} | |")
    lines += ["", f"5xx responses: {server_errors}. Transport errors: {dict(s.errors) or 'none'}. After the "
              f"traffic stopped: {after}; /health {httpx.get(base + '/health', timeout=30).status_code}; "
              f"tracebacks in the server's log: {log_text.count('Traceback')}.", "",
              "| kind | requests | statuses |", "|---|---|---|"]
    for kind in KINDS:
        c = statuses[kind]
        lines.append(f"| {kind} | {sum(c.values())} | {', '.join(f'{k}: {v}' for k, v in sorted(c.items()))} |")
    lines += ["", "Open file descriptors by target, after warm-up and at the end:", "", "```text"]
    lines += [f"{n:3d} {m:3d}  {k}" for k in sorted(set(first["fd_kinds"]) | set(last["fd_kinds"]))
              for n, m in [(first["fd_kinds"].get(k, 0), last["fd_kinds"].get(k, 0))]]
    lines += ["```", "", "Samples (minute: RSS MiB, fds, threads, load):", "", "```text"]
    lines += [f"{x['t'] / 60:5.1f}: {x['rss_mib']:7.1f} {x['fds']:4d} {x['threads']:4d} {x['load']:5.2f}"
              for x in samples]
    return "\n".join(lines + ["```", ""])


def _cpu_name() -> str:
    m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    return m.group(1) if m else "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default", help="served model (with --url: only named in the report)")
    ap.add_argument("--url", help="an already running server (default: start one on a free loopback port)")
    ap.add_argument("--pid", type=int, help="with --url: the server's process id, for /proc figures")
    ap.add_argument("--served-model-name", default="soak")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--warmup-minutes", type=float, default=2)
    ap.add_argument("--window-minutes", type=float, default=3, help="latency windows after warm-up and at the end")
    ap.add_argument("--sample-seconds", type=float, default=15)
    ap.add_argument("--tokens", type=int, default=16, help="max_tokens of each request (cut streams ask for 256)")
    ap.add_argument("--out", help="also write the markdown report here")
    ap.add_argument("--note", help="a sentence for the report's machine line (what else ran meanwhile)")
    args = ap.parse_args()
    if args.url and not args.url.startswith(("http://127.0.0.1", "http://localhost")):
        sys.exit("--url: loopback only")
    proc, data = None, None
    if args.url:
        base, pid = args.url.rstrip("/"), args.pid
    else:
        proc, base, data = start_server(args)
        pid = proc.pid
    try:
        s, samples, t0, t1 = asyncio.run(soak(args, base, pid))
        time.sleep(2)  # cancelled streams finish unwinding
        after = engine_gauges(base)
        log_text = (data / "server.log").read_text() if data else ""
        text = report(args, s, samples, t0, t1, after, base, log_text)
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=60)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
