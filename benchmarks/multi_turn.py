"""Time to first token of each turn of a chat, with the history the cache holds and with every prompt computed whole.

    python benchmarks/multi_turn.py [--model default] [--turns 6] [--max-tokens 64] [--rounds 3]

One conversation (greedy replies, so both ways hold the same history); each turn is timed twice in a row:
after `reset_prefix_cache()` (cold) and reusing what the previous turn left (warm); medians over rounds.
"""
from __future__ import annotations

import argparse
import statistics
import time

from llm_runtime import LLM, SamplingParams

QUESTIONS = ["What is the capital of France?", "What is it famous for?", "Tell me about its history.",
             "Which museums should I visit?", "What food should I try there?", "How do I get around the city?",
             "What is the weather like in spring?", "Give me a one-day plan."]


def first_token_s(llm: LLM, messages: list[dict], params: SamplingParams) -> tuple[float, str]:
    start, ttft, text = time.perf_counter(), 0.0, ""
    for chunk in llm.chat_stream(messages, params):
        ttft = ttft or time.perf_counter() - start
        text += chunk.text
    return ttft, text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--turns", type=int, default=6)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    llm = LLM(args.model)
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0)
    cold: list[list[float]] = [[] for _ in range(args.turns)]
    warm: list[list[float]] = [[] for _ in range(args.turns)]
    prompt_tokens, mismatches = [], 0
    for _ in range(args.rounds):
        messages: list[dict] = []
        for turn in range(args.turns):
            messages.append({"role": "user", "content": QUESTIONS[turn % len(QUESTIONS)]})
            history = llm.render_chat(messages)
            if len(prompt_tokens) < args.turns:
                prompt_tokens.append(len(llm.encode(history, special=False)))
            if turn:  # the cache holds the previous turn: time it warm first, then cold
                s, warm_reply = first_token_s(llm, messages, params)
                warm[turn].append(s)
            llm.reset_prefix_cache()
            s, reply = first_token_s(llm, messages, params)
            cold[turn].append(s)
            if turn and warm_reply != reply:
                mismatches += 1
            messages.append({"role": "assistant", "content": reply})
    print(f"{'turn':>4} {'prompt tokens':>13} {'cold TTFT':>10} {'warm TTFT':>10} {'ratio':>6}")
    for turn in range(args.turns):
        c = statistics.median(cold[turn])
        line = f"{turn + 1:>4} {prompt_tokens[turn]:>13} {1000 * c:>8.1f}ms"
        if warm[turn]:
            w = statistics.median(warm[turn])
            line += f" {1000 * w:>8.1f}ms {w / c:>6.2f}"
        print(line)
    print(f"replies that differ warm and cold: {mismatches} of {(args.turns - 1) * args.rounds}")


if __name__ == "__main__":
    main()
