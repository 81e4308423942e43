"""`llm-runtime pull NAME`: download a Hub model and build it into the cache, so that the first `serve` starts
from the build (the recipe flags pick another build: an int8 one, one for CUDA)."""
from __future__ import annotations

import argparse
from dataclasses import replace

from .recipe_args import add_recipe_arguments, recipe


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="a Hub name: org/name, org/name@revision, org/name:QUANT or org/name/file.gguf")
    add_recipe_arguments(p)


def run(args) -> int:
    from llm_runtime.model_builder.precision import BuildOptions
    from llm_runtime.models.build_cache import size_on_disk
    from llm_runtime.models.hub_name import parse
    from llm_runtime.models.resolver import ORT_HAS_QUERY_SEQLENS, resolve_hub

    name = parse(args.name)
    if name is None:
        raise ValueError(f"{args.name} is not a Hub name (org/name, org/name@revision, org/name:QUANT)")
    # without flags, the recipe every door builds for this provider (resolver.build_options_for): serve finds it
    opts = BuildOptions(**recipe(args))
    if not ORT_HAS_QUERY_SEQLENS:
        opts = replace(opts, query_seqlens=False)
    entry = resolve_hub(name, opts)
    print(f"{entry.name} at {entry.commit[:12]}, {entry.recipe}: {size_on_disk(entry) / 1e6:.1f} MB in {entry.folder}")
    return 0
