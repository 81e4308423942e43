"""Predicted Outputs on code edits: the same greedy replies with the original file as prediction, and how much sooner.

    python benchmarks/predicted_outputs.py [--model default] [--rounds 1] [--max-tokens 192] [--threads 2]
                                           [--edits 8] [--concurrent 8] [--cached-prompts] [--no-single]
                                           [--near-ties]

Each edit is a real source file of 100-400 lines from an installed package with an instruction (rename a variable,
add a parameter), rendered with the model's chat template and the reply started with the code block's fence; the
prediction is the original file. Greedy, one process and one engine (no --speculation: the prediction alone
drafts), alternating with and without a prediction; the replies are asserted to be the same token for token (on a
batch-invariant build, such as fp32; an int4 build's multi-row kernels round differently and may part on a
near-tie: `--near-ties` counts the replies that differ instead of asserting). Batch 1: decode tok/s, (tokens - 1)
/ (time from the first token to the last), summed over the edits. Batch 8: all edits submitted together,
aggregate tok/s from submit to the last token (and per CPU second of this process), prompts computed anew (the prefix cache is reset before each), or
with `--cached-prompts` taken from the prefix cache in both arms (an untimed warm-up submits them together first,
each to its own slot), so that the figure is the decode phase's (on a slow machine a larger model's prefill
would be most of the time). `--no-single` skips the batch-1 part.
Also: usage's accepted and rejected prediction tokens, and tokens emitted per verification (from the engine's
counters). The load average before and after is printed: on a shared machine, figures move with it.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import os
import time
from pathlib import Path

from llm_runtime import LLM, SamplingParams
from llm_runtime.models.resolver import resolve_model

EDITS = (  # module, identifier the instruction names (checked to be in the file), instruction
    ("colorsys", "maxc", "Rename the variable `maxc` to `max_channel` everywhere."),
    ("bisect", "insort_right", ("Add a keyword parameter `unique=False` to `insort_right`; when true, do not "
                                "insert an item equal to one already in the list.")),
    ("fnmatch", "pat", "Rename the parameter `pat` to `pattern` everywhere."),
    ("httpx._status_codes", "phrase", "Rename the variable `phrase` to `reason_phrase` everywhere."),
    ("anyio.lowlevel", "cancel_shielded_checkpoint", ("Rename the function `cancel_shielded_checkpoint` to "
                                                      "`shielded_checkpoint` everywhere.")),
    ("click.formatting", "width", "Rename the parameter `width` to `max_width` everywhere."),
    ("queue", "maxsize", "Rename `maxsize` to `capacity` everywhere."),
    ("shlex", "posix", "Rename the parameter `posix` to `posix_mode` everywhere."),
)


def edits(llm: LLM) -> list[dict]:
    out = []
    for module, name, instruction in EDITS:
        source = Path(inspect.getsourcefile(importlib.import_module(module))).read_text()
        assert name in source and 100 <= len(source.splitlines()) <= 400, module
        content = f"{instruction} Reply with the whole edited file in one Python code block.\n\n```python\n{source}```"
        # the reply is started with the code block's fence: a 135M model asked plainly tends to describe the code
        ids = llm.encode(llm.render_chat([{"role": "user", "content": content}]) + "```python\n", special=False)
        out.append({"module": module, "ids": ids, "prediction": f"{source}```"})
    return out


def one(llm: LLM, edit: dict, params: SamplingParams) -> tuple[list[int], float, object]:
    """Greedy reply token ids, seconds from the first token to the last, and the usage."""
    tokens, first, usage = [], None, None
    for chunk in llm.submit(edit["ids"], params):
        tokens += chunk.token_ids
        usage = chunk.usage or usage
        if first is None and tokens:
            first = time.perf_counter()
    return tokens, time.perf_counter() - first, usage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=192)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--edits", type=int, default=len(EDITS), help="the first N edits (a larger model: fewer)")
    ap.add_argument("--concurrent", type=int, default=8, help="edits submitted together (0: skip that part)")
    ap.add_argument("--cached-prompts", action="store_true", help="concurrent part: prompts from the prefix cache")
    ap.add_argument("--no-single", action="store_true", help="skip the batch-1 part")
    ap.add_argument("--near-ties", action="store_true", help="count differing replies instead of asserting")
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()}", flush=True)
    llm = LLM(str(resolve_model(args.model)), threads=args.threads)
    todo = edits(llm)[:args.edits]

    def params(edit: dict | None) -> SamplingParams:
        return SamplingParams(max_tokens=args.max_tokens, temperature=0, prediction=edit and edit["prediction"])

    totals = {"plain": [0, 0.0], "predicted": [0, 0.0]}
    accepted = rejected = differ = 0

    def check_same(a, b, what: str) -> int:
        assert args.near_ties or a == b, f"{what}: the replies differ"
        return int(a != b)
    start = llm.engine.stats()
    for r in range(0 if args.no_single else args.rounds):
        for i, edit in enumerate(todo):
            runs = {}
            for name in ("plain", "predicted") if (r + i) % 2 == 0 else ("predicted", "plain"):
                runs[name] = one(llm, edit, params(edit if name == "predicted" else None))
                totals[name][0] += len(runs[name][0]) - 1
                totals[name][1] += runs[name][1]
            differ += check_same(runs["plain"][0], runs["predicted"][0], edit["module"])
            u = runs["predicted"][2]
            accepted, rejected = accepted + u.accepted_prediction_tokens, rejected + u.rejected_prediction_tokens
            print(f"{edit['module']}: {len(edit['ids'])} prompt tokens, {len(runs['plain'][0])} generated, "
                  f"plain {(len(runs['plain'][0]) - 1) / runs['plain'][1]:.1f} tok/s, predicted "
                  f"{(len(runs['predicted'][0]) - 1) / runs['predicted'][1]:.1f} tok/s, accepted "
                  f"{u.accepted_prediction_tokens}, rejected {u.rejected_prediction_tokens}", flush=True)
    if not args.no_single:
        end = llm.engine.stats()
        verifications = end.verifications - start.verifications
        rates = {k: n / s for k, (n, s) in totals.items()}
        print(f"\nbatch 1, decode tok/s over {len(todo)} edits x {args.rounds} round(s), {args.max_tokens} tokens at most, "
              f"threads={args.threads}: plain {rates['plain']:.1f}, predicted {rates['predicted']:.1f}, "
              f"ratio {rates['predicted'] / rates['plain']:.2f}")
        print(f"prediction tokens accepted {accepted}, rejected {rejected} (acceptance "
              f"{accepted / max(accepted + rejected, 1):.2f}); {verifications} verifications, "
              f"{(end.accepted_tokens - start.accepted_tokens) / max(verifications, 1) + 1:.2f} tokens per verification; "
              f"{differ} of {len(todo) * args.rounds} replies differ")

    print(f"\n{args.concurrent} concurrent edits, aggregate tok/s (submit to last token)")
    if args.cached_prompts and args.concurrent:  # every prompt in a slot of its own, for both arms to reuse
        llm.reset_prefix_cache()
        warm = SamplingParams(max_tokens=1, temperature=0)
        for handle in [llm.submit(e["ids"], warm) for e in todo[:args.concurrent]]:
            handle.result()
    for r in range(args.rounds if args.concurrent else 0):
        row, replies = {}, {}
        for name in ("plain", "predicted") if r % 2 == 0 else ("predicted", "plain"):
            if not args.cached_prompts:
                llm.reset_prefix_cache()  # both pay for their prompts: the second would reuse the first's
            begin, cpu = time.perf_counter(), time.process_time()
            handles = [llm.submit(e["ids"], params(e if name == "predicted" else None)) for e in todo[:args.concurrent]]
            replies[name] = [h.result().token_ids for h in handles]
            tokens = sum(map(len, replies[name]))
            row[name] = tokens / (time.perf_counter() - begin), tokens / (time.process_time() - cpu)
        n = sum(check_same(a, b, "concurrent") for a, b in zip(replies["plain"], replies["predicted"]))
        (wall, cpu), (wall_p, cpu_p) = row["plain"], row["predicted"]
        print(f"round {r + 1}: plain {wall:.1f}, predicted {wall_p:.1f}, ratio {wall_p / wall:.2f}; per CPU second "
              f"(this process's threads, which other jobs on the machine disturb less): plain {cpu:.1f}, predicted "
              f"{cpu_p:.1f}, ratio {cpu_p / cpu:.2f}; {n} replies differ")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
