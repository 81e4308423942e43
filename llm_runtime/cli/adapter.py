"""`llm-runtime adapter convert SRC OUT --to folder|onnx_adapter`: a LoRA adapter from any format we read (PEFT
folder or ours, llama.cpp GGUF LoRA, .onnx_adapter) written as our folder or as onnxruntime-genai's .onnx_adapter;
with `--base`, checked against that model first; with `--pad-for`, padded to feed every LoRA input of an ONNX
model."""
from __future__ import annotations

import argparse
from pathlib import Path

TARGETS = ("folder", "onnx_adapter")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    convert = sub.add_parser("convert", help="convert an adapter to our folder or an .onnx_adapter file",
                             description="convert an adapter to our folder or an .onnx_adapter file")
    convert.add_argument("source", type=Path, help="a PEFT folder (or ours), a GGUF LoRA, or an .onnx_adapter")
    convert.add_argument("output", type=Path, help="the folder or .onnx_adapter file to write")
    convert.add_argument("--to", choices=TARGETS, required=True, help="the format to write")
    convert.add_argument("--base", type=Path,
                         help="the base model (a folder with config.json, Hugging Face or built, or a .gguf model): "
                              "checked against, and needed for llama GGUF LoRAs and Phi-3's fused modules")
    convert.add_argument("--name", help="the adapter's name (default: the source's file or folder name)")
    convert.add_argument("--naming", choices=("hf", "genai"), default="hf",
                         help="onnx_adapter parameter names: Hugging Face module names (Olive's convert-adapters) "
                              "or onnxruntime-genai builder's (model.layers.N.attn.q_proj)")
    convert.add_argument("--pad-for", type=Path, metavar="MODEL.onnx",
                         help="onnx_adapter for this model: every LoRA input it takes, at one rank (zeros added)")


def base_config(path: Path):
    """The ModelConfig of a folder with config.json, or of a .gguf model file."""
    from llm_runtime.model_builder.config import folder_config, model_config

    if path.is_dir():
        if (cfg := folder_config(path)) is None:
            raise ValueError(f"{path}: no config.json; --base is a model folder or a .gguf model file")
        return cfg
    from llm_runtime.model_builder.gguf_source import GGUFSource

    return model_config(GGUFSource(path).config)


def run(args) -> int:
    from llm_runtime.adapters import check_fits, linear_shapes, read_adapter, write_folder, write_onnx_adapter

    cfg = base_config(args.base) if args.base else None
    adapter = read_adapter(args.source, args.name, cfg)
    if cfg is not None:
        check_fits(adapter, cfg.model_type, linear_shapes(cfg))
    if args.to == "folder":
        write_folder(adapter, args.output)
    else:
        from llm_runtime.adapters.genai_adapter import lora_inputs

        pad_to = lora_inputs(args.pad_for) if args.pad_for else None
        write_onnx_adapter(adapter, args.output, args.naming, pad_to=pad_to)
    print(f"wrote {args.output}: {adapter.name}, {len(adapter.pairs)} linears, rank up to {adapter.rank}, "
          f"{adapter.nbytes / 1e6:.2f} MB")
    return 0
