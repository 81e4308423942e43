"""What prompt lookup can give on the speculation prompt set: the engine's proposer and draft policy replayed over
the model's own greedy replies, priced with the policy's cost model.

    python benchmarks/speculation_replay.py [--model default] [--max-tokens 128] [--ngram 1:3 2:4 ...] [--k 4 6]

Each prompt of prompts/speculation_bench.jsonl is answered greedily without speculation, once. Then, per n-gram
range and K, a replay walks each reply as the engine would (one row, batch 1): the policy picks k, the proposer
drafts, the drafts are accepted while they equal the reply, and each verification costs
`policy.call_cost(1, 1 + k)` against `call_cost(1, 1)` per plain decode. Printed: the predicted speedup per kind
and the acceptance rate. A replay assumes verification picks what plain decoding picked (exact in fp32; int4
verification rounds like prefill, so real runs accept somewhat less), and it measures no time: it shows what
the model's replies leave for prompt lookup to copy, the ceiling a real run approaches.
"""
from __future__ import annotations

import argparse
from collections import defaultdict

from llm_runtime import LLM, SamplingParams
from llm_runtime.speculation import DraftPolicy, PromptLookup
from llm_runtime.speculation.policy import call_cost
from speculation_bench import KINDS, load_prompts


def replay(prompt: list[int], reply: list[int], min_n: int, max_n: int, max_k: int) -> tuple[int, int, int, float]:
    """(tokens after the first, drafts, accepted, cost in plain-decode units) of speculating over `reply`."""
    lookup, policy = PromptLookup(prompt + reply[:1], min_n, max_n), DraftPolicy(max_k=max_k)
    i, drafts, accepted, cost = 1, 0, 0, 0.0
    while i < len(reply):
        k = policy.k(1, len(reply) - i)
        guess = lookup.propose(k) if k > 0 else []
        took = next((j for j, t in enumerate(guess) if reply[i + j] != t), len(guess))
        if guess:
            policy.update(len(guess), took)
        drafts, accepted = drafts + len(guess), accepted + took
        cost += call_cost(1, 1 + len(guess)) / call_cost(1, 1)
        lookup.extend(reply[i:i + took + 1])
        i += took + 1
    return len(reply) - 1, drafts, accepted, cost


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--ngram", nargs="+", default=["1:3", "2:3", "2:4", "2:5", "3:5"], help="MIN:MAX n-gram ranges")
    ap.add_argument("--k", type=int, nargs="+", default=[4, 6], help="num_speculative_tokens values")
    args = ap.parse_args()
    llm = LLM(args.model)
    prompts = load_prompts()
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0)
    for p in prompts:
        p["ids"] = llm.encode(llm.render_chat([{"role": "user", "content": p["prompt"]}]), special=False)
        p["reply"] = [t for chunk in llm.stream_ids(p["ids"], params) for t in chunk.token_ids]
    print(f"replayed over the greedy replies ({sum(len(p['reply']) for p in prompts)} tokens, "
          f"{len(prompts)} prompts); predicted speedup at batch 1 per kind, acceptance")
    print("| n-gram | K | " + " | ".join(KINDS) + " | grounded | acceptance |")
    print("|---" * (len(KINDS) + 4) + "|")
    for ngram in args.ngram:
        min_n, max_n = (int(x) for x in ngram.split(":"))
        for k in args.k:
            sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
            drafted = taken = 0
            for p in prompts:
                tokens, drafts, accepted, cost = replay(p["ids"], p["reply"], min_n, max_n, k)
                for key in (p["kind"], "grounded") if p["kind"] != "open_chat" else (p["kind"],):
                    sums[key][0] += tokens
                    sums[key][1] += cost
                drafted, taken = drafted + drafts, taken + accepted
            cells = [f"{sums[kind][0] / sums[kind][1]:.2f}" for kind in (*KINDS, "grounded")]
            print(f"| {min_n}..{max_n} | {k} | " + " | ".join(cells) + f" | {taken / max(drafted, 1):.2f} |")


if __name__ == "__main__":
    main()
