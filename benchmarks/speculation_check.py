"""Would speculative decoding with prompt lookup speed up single-stream decode on this machine?

    python benchmarks/speculation_check.py [--model default] [--draft 4]

Prints the cost of one graph call over 1..8 new tokens of one sequence (median of 60 calls each), and how
many graph calls the benchmark's greedy continuation (benchmarks/single_stream.py's decode workload) would need if
each call verified a prompt-lookup draft (`llm_runtime.speculation.PromptLookup`: the longest n-gram, n <= 3, of
the text so far that recurs, followed by up to --draft tokens) instead of one call per token.
"""
from __future__ import annotations

import argparse

from graph_call import call_ms
from single_stream import load_workload

from llm_runtime import LLM, SamplingParams
from llm_runtime.speculation import PromptLookup


def calls_needed(prompt: list[int], out: list[int], k: int) -> int:
    """Graph calls to produce out[1:] when each call feeds the last token plus a draft and keeps what matches."""
    lookup, i, calls = PromptLookup(prompt + out[:1], 1, 3), 1, 0
    while i < len(out):
        guess = lookup.propose(min(k, len(out) - i - 1))
        accepted = next((j for j, t in enumerate(guess) if out[i + j] != t), len(guess))
        lookup.extend(out[i:i + accepted + 1])
        i += accepted + 1
        calls += 1
    return calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--draft", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    llm = LLM(args.model, threads=args.threads)
    w = load_workload(llm.folder.path)
    ids = llm.encode(w.chat_prompt, special=False)
    params = SamplingParams(max_tokens=w.decode_tokens + 1, temperature=0, ignore_eos=True)
    out = [t for chunk in llm.stream_ids(ids, params) for t in chunk.token_ids]
    print(f"greedy continuation: {len(out) - 1} decode tokens need {calls_needed(ids, out, args.draft)} graph calls "
          f"with prompt-lookup drafts of up to {args.draft} tokens")
    costs = {n: call_ms(llm, n, cached=200, reps=60, warmup=1) for n in (1, 2, 3, 4, 6, 8)}
    print("graph call over N new tokens (ms): " + ", ".join(f"{n}: {ms:.2f}" for n, ms in costs.items()))
    print(f"a 2-token call costs {costs[2] / costs[1]:.2f}x a 1-token call")


if __name__ == "__main__":
    main()
