"""A conversation through /v1/responses with previous_response_id: per turn, the prompt tokens, the tokens the
engine reused from the turn before, and time to first token, against the same turn with its history not cached.

    python benchmarks/responses_turns.py [--model default] [--turns 4] [--max-tokens 48] [--rounds 3]

Starts `llm-runtime serve` on a free loopback port. Each round runs the conversation warm (stored turns continued
with previous_response_id, nothing in between: the prompt starts with the previous turn's prompt), then each
turn cold (the same history sent as input items under instructions that start with a fresh nonce, so no cached
prefix matches). Greedy replies; medians over rounds.
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import openai

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from server_process import CLI, free_port  # noqa: E402

QUESTIONS = ["What is the capital of France?", "Tell me about its history.", "What food is it known for?",
             "Name a famous museum there.", "How do I get around the city?", "Give me a one-day plan."]
INSTRUCTIONS = "You are a helpful assistant."


def reused(base: str) -> float:
    return float(re.search(r"^llm_prompt_tokens_reused_total (\S+)$", httpx.get(base + "/metrics").text, re.M)[1])


def turn(client, base: str, **kw) -> tuple[float, int, float, object]:
    """(time to first token, prompt tokens, reused tokens, the response) of one streamed turn."""
    before, start, ttft = reused(base), time.perf_counter(), None
    for e in client.responses.create(model="m", temperature=0, stream=True, **kw):
        if e.type == "response.output_text.delta" and ttft is None:
            ttft = time.perf_counter() - start
        if e.type in ("response.completed", "response.incomplete"):
            done = e.response
    return ttft, done.usage.input_tokens, reused(base) - before, done


def wait_ready(base: str, proc) -> None:
    while proc.poll() is None:
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    port, data = free_port(), tempfile.mkdtemp()
    proc = subprocess.Popen([CLI, "serve", "--model", args.model, "--served-model-name", "m", "--port", str(port),
                             "--data-dir", data], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0)
        rows = {}  # turn -> {"warm": [...], "cold": [...], "tokens": (prompt, reused)}
        for _ in range(args.rounds):
            previous, history = None, []
            for t, question in enumerate(QUESTIONS[:args.turns]):  # warm: one conversation, nothing in between
                warm, prompt, saved, r = turn(client, base, instructions=INSTRUCTIONS, input=question,
                                              previous_response_id=previous, max_output_tokens=args.max_tokens)
                row = rows.setdefault(t + 1, {"warm": [], "cold": []})
                row["warm"].append(warm)
                row["tokens"] = (prompt, saved)
                history.append([{"role": "user", "content": question}])
                history[-1].append({"role": "assistant", "content": r.output_text})
                previous = r.id
            for t in range(args.turns):  # cold: the same histories, each under a fresh nonce
                items = [m for pair in history[:t] for m in pair] + history[t][:1]
                cold, _, _, _ = turn(client, base, instructions=f"{uuid.uuid4().hex} {INSTRUCTIONS}", input=items,
                                     max_output_tokens=args.max_tokens, store=False)
                rows[t + 1]["cold"].append(cold)
        print("| turn | prompt tokens | reused | cold | warm | ratio |\n|---|---|---|---|---|---|")
        for t, row in rows.items():
            cold, warm = statistics.median(row["cold"]), statistics.median(row["warm"])
            print(f"| {t} | {row['tokens'][0]} | {row['tokens'][1]:.0f} | {cold * 1000:.1f} ms | {warm * 1000:.1f} ms "
                  f"| {warm / cold:.2f} |")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
