"""What prompt lookup can give on the speculation prompt set: the engine's proposer and draft policy replayed over
the model's own greedy replies, priced with the policy's cost model.

    python benchmarks/speculation_replay.py [--model default] [--max-tokens 128] [--ngram 1:3 2:4 ...] [--k 4 6]
        [--cost 1 1.2 1.4 ...] [--cost8 1 1.5 ...] [--replies replies.json]

Each prompt of benchmarks/prompts/speculation_bench.jsonl is answered greedily without speculation, once. Then, per n-gram
range and K, a replay walks each reply as the engine would (one row, batch 1): the policy picks k, the proposer
drafts, the drafts are accepted while they equal the reply, and each verification costs
`policy.call_cost(1, 1 + k)` against `call_cost(1, 1)` per plain decode. Printed: the predicted speedup per kind
and the acceptance rate. A replay assumes verification picks what plain decoding picked (exact in fp32; int4
verification rounds like prefill, so real runs accept somewhat less), and it measures no time: it shows what
the model's replies leave for prompt lookup to copy, the ceiling a real run approaches.

`--cost C1 C2 ...` prices a call over n tokens at C[n-1] decode calls instead of the cost model (measured ratios,
benchmarks/verify_cost.py). Then an oracle row: a drafter that always proposes the reply's true continuation, with
the k that maximises (k + 1) / C[k + 1] (all accepted): no drafter verified by this model at these costs can do
better. And a copy oracle: the best any drafter that copies from the prompt and the reply so far can do (the
longest true continuation found there, up to K), and a lookup oracle, the same among the occurrences that
follow the sequence's last n tokens (prompt lookup choosing perfectly among its matches). `--cost8` (ratios for 8 rows of n tokens each against 8 rows of 1) adds batch-8 figures: the oracle's, and
prompt lookup's when every row drafts a fixed k each step (its measured tokens per verification, priced at
C8[k + 1]). `--replies` keeps the greedy replies in a file (made on the first run, read after).
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from speculation_bench import KINDS, load_prompts

from llm_runtime import LLM, SamplingParams
from llm_runtime.speculation import DraftPolicy, PromptLookup
from llm_runtime.speculation.policy import call_cost


def model_cost(tokens: int) -> float:
    """The cost model's price of a one-row call over `tokens` tokens, in one-token calls."""
    return call_cost(1, tokens) / call_cost(1, 1)


def replay(prompt: list[int], reply: list[int], min_n: int, max_n: int, max_k: int,
           price=model_cost, fixed_k: bool = False) -> tuple[int, int, int, float, int]:
    """(tokens after the first, drafts, accepted, cost in plain-decode units, verifications) of speculating over
    `reply`; `fixed_k`: ask for max_k drafts every step instead of the policy's k."""
    lookup, policy = PromptLookup(prompt + reply[:1], min_n, max_n), DraftPolicy(max_k=max_k)
    i, drafts, accepted, cost, verifications = 1, 0, 0, 0.0, 0
    while i < len(reply):
        k = min(max_k, len(reply) - i - 1) if fixed_k else policy.k(1, len(reply) - i)
        guess = lookup.propose(k) if k > 0 else []
        took = next((j for j, t in enumerate(guess) if reply[i + j] != t), len(guess))
        if guess:
            policy.update(len(guess), took)
        drafts, accepted, verifications = drafts + len(guess), accepted + took, verifications + bool(guess)
        cost += price(1 + len(guess))
        lookup.extend(reply[i:i + took + 1])
        i += took + 1
    return len(reply) - 1, drafts, accepted, cost, verifications


def oracle(reply: list[int], costs: list[float]) -> tuple[int, float]:
    """(tokens after the first, cost) when every call verifies the reply's true continuation, k drafts chosen to
    maximise tokens per cost (k + 1 <= len(costs)), fewer near the end."""
    best = max(range(len(costs)), key=lambda k: (k + 1) / costs[k])
    i, cost = 1, 0.0
    while i < len(reply):
        k = min(best, len(reply) - i - 1)
        cost += costs[k]
        i += k + 1
    return len(reply) - 1, cost


def copy_oracle(prompt: list[int], reply: list[int], costs: list[float], min_n: int = 0) -> tuple[int, float]:
    """(tokens after the first, cost) for the best drafter that copies from the context: each call drafts the
    longest run of the reply's true continuation found in the prompt and the reply so far (the best earlier
    occurrence, chosen knowing the answer), up to len(costs) - 1 tokens, all accepted; no draft where none is found.
    `min_n` 0: any occurrence (no drafter that copies can do better); n >= 1: only occurrences preceded by the
    sequence's last n tokens (prompt lookup with a perfect choice among its matches)."""
    i, cost, kmax = 1, 0.0, len(costs) - 1
    while i < len(reply):
        text, want = prompt + reply[:i], reply[i:i + min(kmax, len(reply) - i - 1)]
        best, tail = 0, text[len(text) - min_n:] if min_n else []
        for j in range(min_n, len(text)):
            if min_n and text[j - min_n:j] != tail:
                continue
            n = 0
            while n < len(want) and j + n < len(text) and text[j + n] == want[n]:
                n += 1
            best = max(best, n)
        # an oracle drafts the run only when it pays: d tokens for (d + 1) at costs[d], else a plain call
        d = max(range(best + 1), key=lambda d: (d + 1) / costs[d])
        cost += costs[d]
        i += d + 1
    return len(reply) - 1, cost


def speedups(prompts: list[dict], run) -> dict[str, float]:
    """Per kind and grounded: tokens / cost summed over the prompts, run(p) -> (tokens, cost)."""
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for p in prompts:
        tokens, cost = run(p)
        for key in (p["kind"], "grounded") if p["kind"] != "open_chat" else (p["kind"],):
            sums[key][0] += tokens
            sums[key][1] += cost
    return {key: sums[key][0] / sums[key][1] for key in (*KINDS, "grounded")}


def cells(s: dict[str, float]) -> str:
    return " | ".join(f"{s[key]:.2f}" for key in (*KINDS, "grounded"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--ngram", nargs="+", default=["1:3", "2:3", "2:4", "2:5", "3:5"], help="MIN:MAX n-gram ranges")
    ap.add_argument("--k", type=int, nargs="+", default=[4, 6], help="num_speculative_tokens values")
    ap.add_argument("--cost", type=float, nargs="+", help="measured cost of a one-row call over 1, 2, ... tokens")
    ap.add_argument("--cost8", type=float, nargs="+", help="the same for 8 rows of 1, 2, ... tokens each")
    ap.add_argument("--replies", type=Path, help="greedy replies file: written if missing, read if present")
    args = ap.parse_args()
    prompts = load_prompts()
    if args.replies and args.replies.exists():
        saved = json.loads(args.replies.read_text())
        for p, s in zip(prompts, saved, strict=True):
            p["ids"], p["reply"] = s["ids"], s["reply"]
    else:
        llm = LLM(args.model)
        params = SamplingParams(max_tokens=args.max_tokens, temperature=0)
        for p in prompts:
            p["ids"] = llm.encode(llm.render_chat([{"role": "user", "content": p["prompt"]}]), special=False)
            p["reply"] = [t for chunk in llm.stream_ids(p["ids"], params) for t in chunk.token_ids]
        if args.replies:
            args.replies.write_text(json.dumps([{"kind": p["kind"], "ids": p["ids"], "reply": p["reply"]}
                                                for p in prompts]))
    price = (lambda n: args.cost[n - 1]) if args.cost else model_cost
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
                tokens, drafts, accepted, cost, _ = replay(p["ids"], p["reply"], min_n, max_n, k, price)
                for key in (p["kind"], "grounded") if p["kind"] != "open_chat" else (p["kind"],):
                    sums[key][0] += tokens
                    sums[key][1] += cost
                drafted, taken = drafted + drafts, taken + accepted
            row = [f"{sums[kind][0] / sums[kind][1]:.2f}" for kind in (*KINDS, "grounded")]
            print(f"| {min_n}..{max_n} | {k} | " + " | ".join(row) + f" | {taken / max(drafted, 1):.2f} |")
    if args.cost:
        print(f"| oracle drafter | <= {len(args.cost) - 1} | " +
              cells(speedups(prompts, lambda p: oracle(p["reply"], args.cost))) + " | 1.00 |")
        for n in (0, 1, 2):
            name = "copy oracle" if n == 0 else f"lookup oracle, n >= {n}"
            print(f"| {name} | <= {len(args.cost) - 1} | " +
                  cells(speedups(prompts, lambda p: copy_oracle(p["ids"], p["reply"], args.cost, n))) + " | 1.00 |")
    if args.cost8:
        print("\nbatch 8, every row drafting each step (ratios to the plain 8-row step)")
        print("| drafter | k | " + " | ".join(KINDS) + " | grounded |")
        print("|---" * (len(KINDS) + 3) + "|")
        print(f"| oracle | <= {len(args.cost8) - 1} | " +
              cells(speedups(prompts, lambda p: oracle(p["reply"], args.cost8))) + " |")
        for n in (0, 2):
            name = "copy oracle" if n == 0 else f"lookup oracle, n >= {n}"
            print(f"| {name} | <= {len(args.cost8) - 1} | " +
                  cells(speedups(prompts, lambda p: copy_oracle(p["ids"], p["reply"], args.cost8, n))) + " |")
        min_n, max_n = (int(x) for x in args.ngram[0].split(":"))
        for k in range(1, len(args.cost8)):
            def lookup_fixed(p, k=k):  # every step verifies k drafts (padding where the proposer has none)
                tokens, _, _, _, _ = replay(p["ids"], p["reply"], min_n, max_n, k, fixed_k=True)
                steps = replay(p["ids"], p["reply"], min_n, max_n, k, lambda n: 1.0, fixed_k=True)[3]
                return tokens, steps * args.cost8[k]
            print(f"| prompt lookup {min_n}..{max_n} | {k} | " + cells(speedups(prompts, lookup_fixed)) + " |")


if __name__ == "__main__":
    main()
