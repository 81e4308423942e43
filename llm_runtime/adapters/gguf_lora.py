"""llama.cpp GGUF LoRA files (`convert_lora_to_gguf.py`'s output) read into a `LoraAdapter`.

Such a file has `general.type` "adapter", `adapter.type` "lora", `adapter.lora.alpha`, and per adapted weight
`blk.N.attn_q.weight.lora_a` (GGUF shape [in, rank], numpy [rank, in]) and `.lora_b` ([rank, out], numpy
[out, rank]) in F32, F16, BF16 or Q8_0. llama.cpp scales each pair by alpha / rank (its rank: lora_a's), or by 1
where alpha is 0; it knows neither rsLoRA nor per-module alphas, and neither does the converter. For the llama
architecture the converter permuted the rows of q and k (and so of their lora_b) for llama.cpp's rotary layout;
undoing that needs the base's head counts, so those files are read with the base's config.
"""
from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from ..errors import AdapterError
from ..model_builder.config import ModelConfig
from ..model_builder.gguf_source import ARCHITECTURES, LAYER_TENSORS, hf_tensor_name, open_gguf, unpermute_rows
from ..model_builder.source import SourceError
from .lora import LoraAdapter, LoraPair

QK_HEADS = {"self_attn.q_proj": "num_heads", "self_attn.k_proj": "num_kv_heads"}
READABLE = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16,
            gguf.GGMLQuantizationType.Q8_0}


def open_reader(path: Path) -> gguf.GGUFReader:
    try:
        return open_gguf(path)
    except SourceError as e:
        raise AdapterError(str(e)) from None


def field(reader: gguf.GGUFReader, key: str):
    f = reader.fields.get(key)
    return None if f is None or not f.types else f.contents()


def tensor(t: gguf.ReaderTensor, where: str) -> np.ndarray:
    """float32 in numpy order (GGUF shapes reversed)."""
    if t.tensor_type not in READABLE:
        raise AdapterError(f"{where}: tensor {t.name} is {t.tensor_type.name}; LoRA factors are read in "
                           f"{', '.join(sorted(q.name for q in READABLE))}")
    w = np.array(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
    shape = tuple(int(d) for d in reversed(t.shape))
    if w.shape != shape:
        raise AdapterError(f"{where}: {t.name} dequantized to {w.shape}, expected {shape}")
    return w


def module_of(name: str, layer_tensors: dict[str, str], where: str) -> tuple[str, str]:
    """'blk.3.attn_q.weight.lora_a' -> ('model.layers.3.self_attn.q_proj', 'a')."""
    base, _, factor = name.rpartition(".lora_")
    if factor not in ("a", "b"):
        raise AdapterError(f"{where}: tensor {name} is not a LoRA factor ('<weight>.lora_a' or '.lora_b'); "
                           "adapters that also replace norms or other tensors are not applied")
    hf = hf_tensor_name(base, layer_tensors)
    if hf is None or not hf.endswith("_proj.weight"):
        what = "an embedding or the output" if hf else "no linear we know"
        raise AdapterError(f"{where}: tensor {name} adapts {base}, {what}; only linears inside the layers are applied")
    return hf.removesuffix(".weight"), factor


def read_gguf_lora(path: Path, name: str, config: ModelConfig | None = None) -> LoraAdapter:
    """A GGUF LoRA as a LoraAdapter, llama.cpp's alpha / rank folded into B. `config` (the base's) is needed for
    the llama architecture, whose q/k rows the converter permuted."""
    path, where = Path(path), str(path)
    reader = open_reader(path)
    kind, adapter_type = field(reader, "general.type"), field(reader, "adapter.type")
    if kind != "adapter" or adapter_type != "lora":
        raise AdapterError(f"{where}: not a GGUF LoRA adapter (general.type {kind!r}, adapter.type {adapter_type!r})")
    arch_name = field(reader, "general.architecture")
    arch = ARCHITECTURES.get(arch_name)
    if arch is None:
        raise AdapterError(f"{where}: GGUF architecture {arch_name!r} is not supported "
                           f"(supported: {', '.join(ARCHITECTURES)})")
    alpha = float(field(reader, "adapter.lora.alpha") or 0.0)
    layer_tensors = {**LAYER_TENSORS, **arch.layer_tensors}
    halves: dict[str, dict[str, np.ndarray]] = {}
    for t in reader.tensors:
        module, factor = module_of(t.name, layer_tensors, where)
        halves.setdefault(module, {})[factor] = tensor(t, where)
    pairs = {}
    for module, half in halves.items():
        if set(half) != {"a", "b"}:
            raise AdapterError(f"{where}: {module} has lora_{'a' if 'a' in half else 'b'} but not the other factor")
        a, b = half["a"], half["b"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise AdapterError(f"{where}: {module} has lora_a {list(a.shape)} and lora_b {list(b.shape)} (numpy "
                               "order); expected [rank, in] and [out, rank]")
        rank = a.shape[0]
        b = b * np.float32(alpha / rank if alpha else 1.0)
        proj = module.split(".", 3)[3]
        if arch.permute_qk and proj in QK_HEADS:
            if config is None:
                raise AdapterError(f"{where}: a {arch_name} GGUF LoRA stores q/k rows permuted; reading it needs "
                                   "the base model's config (its head counts)")
            heads = getattr(config, QK_HEADS[proj])
            if b.shape[0] % (2 * heads):
                raise AdapterError(f"{where}: {module} lora_b has {b.shape[0]} rows, not a multiple of 2x{heads} heads")
            b = unpermute_rows(b, heads)
        pairs[module] = LoraPair(np.ascontiguousarray(a), np.ascontiguousarray(b, dtype=np.float32))
    if not pairs:
        raise AdapterError(f"{where}: the GGUF LoRA holds no tensors")
    # llama.cpp writes "llama" for Mistral bases too: that architecture names no one model type
    model_type = None if arch_name == "llama" else arch.model_type
    return LoraAdapter(name=name, pairs=pairs, base_model_type=model_type, source=where,
                       metadata={"lora_alpha": alpha, "architecture": arch_name})
