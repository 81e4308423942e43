"""`llm-runtime rm NAME`: delete a Hub model's builds (every recipe; one revision's with NAME@revision, one
GGUF's with NAME:QUANT) and the downloaded files no other build uses, from huggingface_hub's cache."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="a Hub name, as `llm-runtime list` shows it")
    p.add_argument("--keep-download", action="store_true",
                   help="delete only the builds; keep the downloaded files in huggingface_hub's cache")


def run(args) -> int:
    from llm_runtime.models import build_cache
    from llm_runtime.models.hub_name import parse

    name = parse(args.name)
    if name is None:
        raise ValueError(f"{args.name} is not a Hub name (org/name, org/name@revision, org/name:QUANT)")
    gone = build_cache.matching(name)
    if not gone:
        raise ValueError(f"{name} is not in the cache (`llm-runtime list` shows what is)")
    for entry in gone:
        build_cache.remove(entry)
        print(f"removed {entry.name} at {entry.commit[:12]}, {entry.recipe}")
    if not args.keep_download:
        from llm_runtime.models.hub import delete_downloads

        kept = {e.commit for e in build_cache.entries() if e.repo == name.repo}
        if freed := delete_downloads(name.repo, {e.commit for e in gone} - kept):
            print(f"deleted {freed / 1e6:.1f} MB of downloaded files")
    return 0
