"""`llm-runtime list`: the Hub models in the cache, one line per build: name, revision and commit, recipe, size
on disk (the build and its downloaded files) and when it was last used."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args) -> int:
    from llm_runtime.models.build_cache import age, entries, size_on_disk

    rows = [("NAME", "REVISION", "RECIPE", "SIZE", "LAST USED")]
    rows += [(e.name, f"{e.revision} ({e.commit[:12]})", e.recipe, f"{size_on_disk(e) / 1e6:.1f} MB", age(e.last_used))
             for e in entries()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0
