"""The build recipe's flags, shared by `build` and `pull`: the options that BuildOptions.tag tells apart, which
is what names a cached build (precision, target, quantizer, GGUF import, activations, the batching input)."""
from __future__ import annotations

import argparse

from llm_runtime.model_builder.precision import ACTIVATIONS, BuildTarget, Precision


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=[x.value for x in Precision], default="int4")
    p.add_argument("--provider", choices=[x.value for x in BuildTarget], default="cpu",
                   help="the execution provider the graph is built for")
    p.add_argument("--quantizer", choices=["search", "rtn"], default="search",
                   help="float weights -> blocks: per-block error search (default) or round-to-nearest (faster "
                        "build, worse model; symmetric unless --grid says otherwise)")
    p.add_argument("--requantize", action="store_true",
                   help="GGUF: dequantize every tensor and quantize it again with --quantizer instead of importing "
                        "its blocks exactly (each tensor in its own format, the default)")
    p.add_argument("--activations", choices=list(ACTIVATIONS), default="mixed",
                   help="CPU MatMulNBits activations: mixed (default: float into a 4-bit qkv_proj, int8 "
                        "elsewhere), int8 (everywhere: fastest), float (everywhere: exact products, ~10x slower "
                        "decode)")
    p.add_argument("--no-query-seqlens", action="store_true",
                   help="leave out the batching input, for onnxruntime older than 1.32 (one sequence per call)")


def recipe(args: argparse.Namespace) -> dict:
    """The recipe flags as BuildOptions keywords."""
    return {"precision": Precision(args.precision), "target": BuildTarget(args.provider), "quantizer": args.quantizer,
            "requantize": args.requantize, "activations": args.activations,
            "query_seqlens": not args.no_query_seqlens}
