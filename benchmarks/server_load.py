"""Load test of `llm-runtime serve` on loopback, against the engine driven directly at the same concurrency.

    python benchmarks/server_load.py [--model default] [--concurrency 1,4,16] [--tokens 128] [--requests-per-client 2]

Reports requests/s, aggregate tokens/s, time-to-first-token and inter-token latency percentiles, and
the server's share of the engine's direct throughput. Server and engine runs alternate in one run.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from load import prompts


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")


async def stream_request(host: str, port: int, body: bytes) -> tuple[list[float], int]:
    """One streamed request over a raw connection (a light client: it shares the CPU with the server).
    Returns the arrival times of content chunks and the completion tokens from the usage chunk."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    times, tokens = [], 0
    while line := await reader.readline():
        if line.startswith(b"data: {"):
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            elif event["choices"] and event["choices"][0]["delta"].get("content"):
                times.append(time.perf_counter())
        elif line.startswith(b"data: [DONE]"):
            break
    writer.close()
    return times, tokens


async def server_run(base: str, model: str, c: int, per_client: int, tokens: int) -> dict:
    host, port = base.split("//")[1].split(":")
    ttft, itl, count = [], [], 0
    texts = prompts(c * per_client)

    async def client(k: int):
        nonlocal count
        for j in range(per_client):
            body = json.dumps({"model": model, "stream": True, "max_tokens": tokens, "ignore_eos": True,
                               "temperature": 0, "stream_options": {"include_usage": True},
                               "messages": [{"role": "user", "content": texts[k * per_client + j]}]}).encode()
            start = time.perf_counter()
            times, n = await stream_request(host, int(port), body)
            count += n
            if times:
                ttft.append(times[0] - start)
                itl.extend(b - a for a, b in zip(times, times[1:]))

    start = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(c)))
    wall = time.perf_counter() - start
    return {"req_s": c * per_client / wall, "tok_s": count / wall, "ttft_p50": pct(ttft, 50), "ttft_p90": pct(ttft, 90),
            "itl_p50": pct(itl, 50), "itl_p90": pct(itl, 90), "itl_p99": pct(itl, 99)}


def engine_run(llm, c: int, per_client: int, tokens: int) -> dict:
    from llm_runtime import SamplingParams

    params = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)
    texts = prompts(c * per_client)
    count, lock = [0], threading.Lock()

    def client(k):
        for j in range(per_client):
            ids = llm.encode(llm.render_chat([{"role": "user", "content": texts[k * per_client + j]}]), special=False)
            n = len(llm.submit(ids, params).result().token_ids)  # blocks: add only afterwards
            with lock:
                count[0] += n

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(c)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"tok_s": count[0] / (time.perf_counter() - start)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--requests-per-client", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="alternating server/engine rounds; medians are reported")
    args = ap.parse_args()
    from llm_runtime import LLM
    from llm_runtime.engine import EngineConfig
    from llm_runtime.models.resolver import resolve_model

    folder = str(resolve_model(args.model))
    levels = [int(x) for x in args.concurrency.split(",")]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli = str(Path(sys.executable).parent / "llm-runtime")
    proc = subprocess.Popen([cli, "serve", "--model", folder, "--port", str(port), "--served-model-name", "bench",
                             "--max-concurrency", str(max(levels))])
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        llm = LLM(folder, engine=EngineConfig(max_concurrency=max(levels)))
        engine_run(llm, 1, 1, 8)  # warm both up (first-run allocations)
        asyncio.run(server_run(base, "bench", 1, 1, 8))
        print(f"{'N':>3} {'req/s':>6} {'server tok/s':>13} {'engine tok/s':>13} {'share':>6} {'TTFT p50':>9} "
              f"{'TTFT p90':>9} {'ITL p50':>8} {'ITL p90':>8} {'ITL p99':>8}")
        for c in levels:
            es, rs = [], []
            for _ in range(args.rounds):
                es.append(engine_run(llm, c, args.requests_per_client, args.tokens))
                rs.append(asyncio.run(server_run(base, "bench", c, args.requests_per_client, args.tokens)))
            e = {k: statistics.median(x[k] for x in es) for k in es[0]}
            r = {k: statistics.median(x[k] for x in rs) for k in rs[0]}
            print(f"{c:>3} {r['req_s']:>6.2f} {r['tok_s']:>13.1f} {e['tok_s']:>13.1f} {r['tok_s'] / e['tok_s']:>6.2f} "
                  f"{r['ttft_p50']*1e3:>7.0f}ms {r['ttft_p90']*1e3:>7.0f}ms {r['itl_p50']*1e3:>6.1f}ms "
                  f"{r['itl_p90']*1e3:>6.1f}ms {r['itl_p99']*1e3:>6.1f}ms", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
