"""`llm-runtime build SOURCE -o OUT`: convert a Hugging Face folder or GGUF file to an ONNX decoder folder."""
from __future__ import annotations

import argparse
from pathlib import Path

from llm_runtime.model_builder.build import build
from llm_runtime.model_builder.contract import LORA_TARGETS
from llm_runtime.model_builder.precision import GRIDS, BuildOptions
from llm_runtime.models.default import default_gguf

from .recipe_args import add_recipe_arguments, recipe


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="Hugging Face folder, .gguf file, or 'default'")
    p.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    add_recipe_arguments(p)
    p.add_argument("--block-size", type=int, default=32, help="quantization block size (int4/int8)")
    p.add_argument("--grid", choices=list(GRIDS),
                   help="blocks quantized from float weights: symmetric (no zero points), zero_points (packed "
                        "uint8), offsets (float per-block offsets, Q4_1-like, an exact offset term beside "
                        "MatMulNBits; the default with --quantizer search on CPU, else symmetric)")
    p.add_argument("--zero-points", dest="grid", action="store_const", const="zero_points",
                   help="the same as --grid zero_points")
    p.add_argument("--offsets", dest="grid", action="store_const", const="offsets", help="the same as --grid offsets")
    p.add_argument("--lm-head-bits", type=int, choices=[4, 8],
                   help="lm_head (and tied embedding) bits: 8 in an int4 CPU build unless a GGUF's own table is "
                        "imported exactly; 4 also re-quantizes a GGUF's 8-bit table (faster decode, worse model)")
    p.add_argument("--lora-targets", type=_targets, default=(), metavar="LIST",
                   help=f"carry per-request LoRA adapter inputs on these linears, comma-separated among "
                        f"{','.join(LORA_TARGETS)}, or 'all' (a second graph, model.lora.onnx, beside the plain one)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output folder")
    p.add_argument("--verify", action="store_true", help="compare logits with transformers (needs torch)")


def run(args) -> int:
    opts = BuildOptions(**recipe(args), block_size=args.block_size, symmetric=args.grid != "zero_points",
                        offsets=None if args.grid is None else args.grid == "offsets", lm_head_bits=args.lm_head_bits,
                        lora_targets=args.lora_targets)
    source = default_gguf() if args.source == "default" else args.source
    result = build(source, args.output, opts, force=args.force)
    print(f"built {result.folder} in {result.seconds:.1f} s")
    if result.quantization.counts:
        print("quantized tensors, by source format:")
        print("\n".join(result.quantization.lines()))
    if args.verify:
        from llm_runtime.evaluation.verify import verify

        print(f"largest logit difference against transformers: {verify(source, result.folder):.3g}")
    return 0


def _targets(text: str) -> tuple[str, ...]:
    targets = LORA_TARGETS if text == "all" else tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [t for t in targets if t not in LORA_TARGETS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown LoRA target {unknown[0]!r} (choose among {','.join(LORA_TARGETS)})")
    return targets
