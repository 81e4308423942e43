"""LoRA adapters per request on one model: the issue's targets, measured in one process, alternating over rounds.

    python benchmarks/lora.py [--model default] [--rank 16] [--rounds 3] [--tokens 128] [--threads 2] [--json OUT]

- single: one stream with an adapter against one stream of the base model (decode tok/s, greedy, EOS ignored);
- base-loaded: base-only traffic on an LLM with four adapters loaded against an LLM without LoRA;
- batch16: 16 concurrent rows across 4 adapters against 16 base rows (aggregate generated tok/s);
- load: loading a rank-`rank` adapter into the LLM while a stream runs (load seconds; the stream's longest gap
  between tokens during the load, against its longest gap in a stream without a load);
- memory: RSS after loading the plain LLM, then after the LoRA LLM with its adapters (two sessions);
- graph: the median time of one decode call (one row, 100 cached tokens): the plain graph, the LoRA graph with no
  slot bound (rank 0: what base-only steps would cost with one session instead of two), and with one adapter.

Adapters are random (every LoRA site of the build at `rank`), so their text is noise; the speeds are what counts.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import threading
import time

import numpy as np

from llm_runtime import LLM, SamplingParams
from llm_runtime.adapters import LoraAdapter, LoraConfig, LoraPair
from llm_runtime.graph.runner import Step
from llm_runtime.model_builder.contract import LORA_TARGETS

PROMPT = "Write a long story about a lighthouse keeper and the sea."


def random_adapter(llm: LLM, name: str, rank: int, seed: int) -> LoraAdapter:
    rng = np.random.default_rng(seed)
    pairs = {}
    for site in llm.folder.contract.lora_sites:
        for module, _, cols in site.modules:
            pairs[module] = LoraPair((rng.standard_normal((rank, site.in_dim)) * 0.02).astype(np.float32),
                                     (rng.standard_normal((cols, rank)) * 0.02).astype(np.float32))
    return LoraAdapter(name, pairs)


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def decode_tps(llm: LLM, adapter: str | None, tokens: int, gaps: list[float] | None = None) -> float:
    """One greedy stream; decode tok/s from its first token to its last; each gap between chunks into `gaps`."""
    params = SamplingParams(temperature=0, max_tokens=tokens + 1, ignore_eos=True, adapter=adapter)
    llm.reset_prefix_cache()
    stamps = [time.perf_counter() for _ in llm.stream(PROMPT, params)]
    if gaps is not None:
        gaps.extend(np.diff(stamps))
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def batch_tps(llm: LLM, adapters: list[str | None], tokens: int) -> float:
    """Aggregate generated tok/s of one request per entry of `adapters`, all submitted at once."""
    llm.reset_prefix_cache()
    ids = llm.encode(PROMPT)
    start = time.perf_counter()
    handles = [llm.submit(ids, SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True, adapter=a))
               for a in adapters]
    n = sum(len(h.result().token_ids) for h in handles)
    return n / (time.perf_counter() - start)


def load_while_streaming(llm: LLM, adapter: LoraAdapter, tokens: int) -> tuple[float, float]:
    """(seconds to load `adapter`, the longest gap between tokens of a stream running meanwhile)."""
    gaps: list[float] = []
    load_s = []

    def load():
        time.sleep(0.3)  # the stream is decoding
        start = time.perf_counter()
        llm.load_adapter(adapter.name, adapter, replace_loaded=True)
        load_s.append(time.perf_counter() - start)

    t = threading.Thread(target=load)
    t.start()
    decode_tps(llm, None, tokens, gaps)
    t.join()
    return load_s[0], max(gaps)


def call_ms(llm: LLM, index: int | None, reps: int = 200) -> float:
    """Median ms of one decode call; index None: the LoRA session with empty factors bound (rank 0)."""
    runner = llm.runner
    llm.cache.ensure_capacity(512)
    step = Step(np.full((1, 1), 100, np.int64), np.array([100]), np.array([1]), np.arange(1), 0,
                None if index is None else np.array([index], np.int64))

    def call():
        if index is not None:
            return runner.run(step, llm.cache)
        # the LoRA graph with no slot bound: what a base-only step would cost without the plain session
        runner._b = runner._lora
        runner._bind_cache(llm.cache, 0, 1)
        for name, view in runner.adapters.table.views(1, 0).items():
            runner._feed(name, view)
        runner._lora.table = None
        runner._feed("lora_index", np.zeros(1, np.int64))
        runner._feed("input_ids", step.input_ids)
        runner._feed("attention_mask", np.ones((1, 100), np.int64))
        runner._feed("query_seqlens", step.query_lens)
        runner._feed("logits_indices", step.logits_at)
        runner._output("logits", (1, 1, runner.vocab))
        runner._lora.session.run_with_iobinding(runner._lora.binding)

    for _ in range(10):
        call()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    plain = LLM(args.model, threads=args.threads)
    rss_plain = rss_mib()
    lora = LLM(args.model, threads=args.threads, lora=LoraConfig(targets=LORA_TARGETS, max_slots=8))
    names = [f"r{args.rank}-{i}" for i in range(4)]
    for i, name in enumerate(names):
        lora.load_adapter(name, random_adapter(lora, name, args.rank, i))
    rss_both = rss_mib()
    rows: dict[str, list[float]] = {k: [] for k in ("single_base", "single_adapter", "plain_base", "loaded_base",
                                                    "batch16_base", "batch16_4adapters", "load_s", "load_max_gap_ms",
                                                    "stream_max_gap_ms", "call_plain_ms", "call_lora_rank0_ms",
                                                    "call_lora_adapter_ms")}
    for r in range(args.rounds):
        rows["single_base"].append(decode_tps(lora, None, args.tokens))
        rows["single_adapter"].append(decode_tps(lora, names[0], args.tokens))
        rows["plain_base"].append(decode_tps(plain, None, args.tokens))
        rows["loaded_base"].append(decode_tps(lora, None, args.tokens))
        rows["batch16_base"].append(batch_tps(lora, [None] * 16, args.tokens // 2))
        rows["batch16_4adapters"].append(batch_tps(lora, [names[i % 4] for i in range(16)], args.tokens // 2))
        gaps: list[float] = []
        decode_tps(lora, None, args.tokens, gaps)
        rows["stream_max_gap_ms"].append(1000 * max(gaps))
        load_s, gap = load_while_streaming(lora, random_adapter(lora, names[3], args.rank, 100 + r), args.tokens)
        rows["call_plain_ms"].append(call_ms(lora, 0))
        rows["call_lora_rank0_ms"].append(call_ms(lora, None))
        rows["call_lora_adapter_ms"].append(call_ms(lora, 1))
        rows["load_s"].append(load_s)
        rows["load_max_gap_ms"].append(1000 * gap)
        print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.3g}" for k, v in rows.items()), flush=True)
    med = {k: statistics.median(v) for k, v in rows.items()}
    result = {
        "load_average": os.getloadavg(), "rss_plain_mib": rss_plain, "rss_plain_and_lora_mib": rss_both,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "adapter_table_mib": lora.adapters.nbytes / 2**20, "median": med,
        "ratios": {"single_adapter_vs_base": med["single_adapter"] / med["single_base"],
                   "base_with_adapters_loaded_vs_plain": med["loaded_base"] / med["plain_base"],
                   "batch16_4adapters_vs_base": med["batch16_4adapters"] / med["batch16_base"],
                   "lora_graph_rank0_vs_plain_call": med["call_lora_rank0_ms"] / med["call_plain_ms"]},
        "rounds": rows,
    }
    print(json.dumps({k: result[k] for k in result if k != "rounds"}, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
