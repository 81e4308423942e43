"""Where a loaded model's resident memory is: RSS after load, after a generation and at its peak, and the
resident set by mapping (heap, other anonymous memory, the model's data file, libraries).

    python benchmarks/memory.py --model default [--prompt-file benchmarks/prompts/bench_long.txt] [--tokens 128]

One process per model: run it twice, alternating, to compare builds. RSS does not depend on the machine's load.
"""
from __future__ import annotations

import argparse
import re
import resource
from collections import Counter
from pathlib import Path

MIB = 2**20


def rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / MIB


def resident_by_mapping() -> Counter:
    """MiB resident per mapping name ("[heap]", "[anon]" for unnamed anonymous memory, or the file's path)."""
    out: Counter = Counter()
    name = "[anon]"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if m := re.match(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$", line):
            name = m.group(1) or "[anon]"
        elif line.startswith("Rss:"):
            out[name] += int(line.split()[1]) / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default", help="built folder, Hugging Face folder, .gguf or 'default'")
    ap.add_argument("--prompt-file", type=Path, help="the prompt (default: one short sentence)")
    ap.add_argument("--tokens", type=int, default=32, help="greedy tokens to generate")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top", type=int, default=6, help="mappings to list")
    args = ap.parse_args()
    from llm_runtime import LLM, SamplingParams

    llm = LLM(args.model, threads=args.threads)
    loaded = rss_mib()
    prompt = args.prompt_file.read_text() if args.prompt_file else "Write a Python function that adds two numbers."
    llm.generate(prompt, SamplingParams(max_tokens=args.tokens, temperature=0, ignore_eos=True))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"RSS after load {loaded:.0f} MiB, after generating {rss_mib():.0f} MiB, peak {peak:.0f} MiB")
    for name, mib in resident_by_mapping().most_common(args.top):
        print(f"{mib:8.1f} MiB  {name}")


if __name__ == "__main__":
    main()
