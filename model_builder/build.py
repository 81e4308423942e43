"""Builds an output folder from a source: graph, external data, genai_config.json, tokenizer, manifest.

The folder is written under a temporary name and renamed at the end, so an interrupted build never
leaves a folder that looks valid.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import onnx
from tqdm import tqdm

from llm_runtime.model_builder import __version__

from .architectures import architecture
from .built_folder import DATA_FILE, LORA_MODEL_FILE, MANIFEST, MODEL_FILE
from .config import model_config
from .contract import CONTRACT_VERSION, GraphContract
from .decoder import DecoderEmitter
from .genai_config import genai_config
from .lora import lora_sites, plain_graph
from .graph_writer import GraphWriter
from .precision import BuildOptions, BuildTarget, Precision
from .quant_summary import QuantSummary
from .recommended_sampling import genai_search, recommended_sampling
from .source import SourceError, WeightSource
from .weights import Weights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildResult:
    folder: Path
    seconds: float
    quantization: QuantSummary  # what happened to each quantized tensor, per source format


def open_source(source: str | Path) -> WeightSource:
    """A .gguf file or a Hugging Face folder -> a WeightSource."""
    path = Path(source)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise SourceError(f"GGUF file not found: {path}")
        from .gguf_source import GGUFSource
        return GGUFSource(path)
    if path.is_dir():
        from .hf_source import HFSource
        return HFSource(path)
    raise SourceError(f"model source not found: {path} (expected a Hugging Face folder or a .gguf file)")


def build(source: str | Path, out: str | Path, opts: BuildOptions = BuildOptions(), force: bool = False,
          progress: bool = True) -> BuildResult:
    """Build `source` into the folder `out`. Raises SourceError with one clear line on bad input."""
    start = time.perf_counter()
    out = Path(out)
    if out.exists() and not force:
        raise SourceError(f"{out} already exists (use --force to overwrite)")
    if out.exists() and not out.is_dir():
        raise SourceError(f"{out} exists and is not a folder")
    src = open_source(source)
    cfg = model_config(src.config, src.generation_config)
    arch = architecture(cfg.model_type)
    tok = src.tokenizer_files()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        contract = GraphContract(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, opts.io_dtype.__name__,
                                 lora_sites=tuple(lora_sites(cfg, opts.lora_targets)))
        g = GraphWriter(tmp, DATA_FILE)
        bar = tqdm(total=cfg.num_layers + 1, desc=f"building {opts.precision.value}", unit="layer",
                   disable=not progress)
        weights = Weights(src, cfg)
        try:
            DecoderEmitter(g, cfg, arch, opts, weights, contract, progress=lambda: bar.update()).emit()
            g.save(tmp / (LORA_MODEL_FILE if opts.lora_targets else MODEL_FILE), f"{cfg.model_type}-decoder",
                   {"llm_runtime.contract_version": str(CONTRACT_VERSION)})
        finally:
            bar.close()
            g.close()
        if opts.lora_targets:  # the plain graph beside it, on the same data file: base-only steps run it
            onnx.checker.check_model(str(tmp / LORA_MODEL_FILE))
            onnx.save_model(plain_graph(onnx.load(str(tmp / LORA_MODEL_FILE), load_external_data=False)),
                            str(tmp / MODEL_FILE))
        onnx.checker.check_model(str(tmp / MODEL_FILE))
        _write_folder(tmp, src, cfg, arch, opts, contract, tok, weights.summary)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno == errno.ENOSPC:
            raise SourceError(f"no space left on the device while writing {out}") from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BuildResult(out, time.perf_counter() - start, weights.summary)


def _write_folder(folder: Path, src: WeightSource, cfg, arch, opts: BuildOptions, contract, tok,
                  summary: QuantSummary) -> None:
    def dump(name: str, obj) -> None:
        (folder / name).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")

    genai = genai_config(cfg, arch, opts, contract)
    genai["search"] = genai_search(genai["search"], recommended_sampling(src.generation_config))
    dump("genai_config.json", genai)
    dump("config.json", cfg.raw)
    gen = dict(src.generation_config)
    gen.setdefault("eos_token_id", list(cfg.eos_token_ids) if len(cfg.eos_token_ids) != 1 else cfg.eos_token_ids[0])
    dump("generation_config.json", gen)
    for name, content in tok.files.items():
        if isinstance(content, str):
            (folder / name).write_text(content)
        else:
            dump(name, content)
    if tok.chat_template:
        (folder / "chat_template.jinja").write_text(tok.chat_template)
    dump(MANIFEST, {
        "contract_version": CONTRACT_VERSION,
        "builder_version": __version__,
        "source": src.description,
        "model_type": cfg.model_type,
        "precision": opts.precision.value,
        "provider": opts.target.value,
        "io_dtype": opts.io_dtype.__name__,
        "block_size": opts.block_size if opts.bits else None,
        "symmetric": opts.grid == "symmetric" if opts.bits else None,
        "quantization": {"requantize": opts.requantize, "quantizer": opts.quantizer, "grid": opts.grid,
                         "activations": opts.activations, "accuracy_level": opts.accuracy_levels(),
                         "tensors": summary.as_dict()} if opts.bits else None,
        "lm_head_bits": opts.head_bits,
        "query_seqlens": opts.query_seqlens,
        "window_cache": {str(i): cfg.window(i) for i in range(cfg.num_layers) if cfg.window(i)},
        **({"lora": {"model": LORA_MODEL_FILE, "targets": list(opts.lora_targets),
                     "sites": [s.as_dict() for s in contract.lora_sites]}}
           if opts.lora_targets else {}),
    })


__all__ = ["build", "BuildOptions", "BuildResult", "BuildTarget", "Precision", "open_source"]
