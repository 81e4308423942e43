"""PEFT LoRA folders (`adapter_config.json` + `adapter_model.safetensors`) read into a `LoraAdapter`.

What PEFT computes for a targeted linear is y = x @ W.T + scale * (x @ A.T) @ B.T with A = lora_A.weight [r, in],
B = lora_B.weight [out, r] and scale = alpha / r (alpha / sqrt(r) with rsLoRA), r and alpha per module from
`rank_pattern` and `alpha_pattern` where a pattern names it. The scale is folded into B here. Phi-3's fused
`qkv_proj` and `gate_up_proj` become q/k/v and gate/up: A shared, B split by rows as the base's config says.
Anything PEFT would add beyond such low-rank deltas (DoRA, biases, whole modules to save, embedding targets) is
refused, so an adapter is never applied partly.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from ..errors import AdapterError
from ..model_builder.architectures import ARCHITECTURES, architecture
from ..model_builder.config import ModelConfig
from ..model_builder.hf_source import _Shard  # safetensors read by memory map, bf16 widened without torch
from ..model_builder.source import SourceError
from ..model_builder.weights import part_rows
from .lora import LoraAdapter, LoraPair

CONFIG, WEIGHTS, PICKLED = "adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"
PREFIX = "base_model.model."
FACTORS = {"lora_A.weight": "a", "lora_B.weight": "b"}
# config keys that add something other than a low-rank delta on a linear: key -> what it would add
REFUSED = {"use_dora": "DoRA (a magnitude vector per output)", "lora_bias": "a bias on lora_B",
           "modules_to_save": "whole modules saved beside the adapter",
           "trainable_token_indices": "trained embedding rows", "layer_replication": "replicated layers",
           "target_parameters": "LoRA on parameters rather than linears"}
UNTARGETABLE = ("embed_tokens", "lm_head")


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AdapterError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(value, dict):
        raise AdapterError(f"{path}: expected a JSON object")
    return value


def pattern_key(patterns: dict, module: str) -> str | None:
    """The first key of `patterns` that names `module`, as PEFT's `get_pattern_key` matches it."""
    return next((key for key in patterns if re.match(rf"(.*\.)?({key})$", module)), None)


def module_scale(cfg: dict, module: str) -> tuple[int, float]:
    """(rank, scale) PEFT gives `module`."""
    ranks, alphas = cfg.get("rank_pattern") or {}, cfg.get("alpha_pattern") or {}
    key_r, key_a = pattern_key(ranks, module), pattern_key(alphas, module)
    r = int(ranks[key_r] if key_r is not None else cfg.get("r", 8))
    alpha = float(alphas[key_a] if key_a is not None else cfg.get("lora_alpha", 8))
    return r, alpha / (math.sqrt(r) if cfg.get("use_rslora") else r)


def targeted(cfg: dict, module: str) -> bool:
    """Whether `target_modules` (a list of names, a regex, or "all-linear") names `module`."""
    targets = cfg.get("target_modules")
    if targets is None or targets == "all-linear":
        return True
    if isinstance(targets, str):
        return re.fullmatch(targets, module) is not None
    return any(module == t or module.endswith("." + t) for t in targets)


def check_supported(cfg: dict, where: str) -> None:
    if cfg.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"{where}: peft_type {cfg.get('peft_type')!r} is not LoRA; only LoRA adapters are read")
    for key, what in REFUSED.items():
        if cfg.get(key):
            raise AdapterError(f"{where}: {key} is set ({what}), which is not applied; only plain LoRA is read")
    if cfg.get("bias", "none") != "none":
        raise AdapterError(f"{where}: bias {cfg['bias']!r} trains biases of the base, which are not applied; "
                           "only bias 'none' is read")


def factor_name(key: str, where: str) -> tuple[str, str]:
    """'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' -> ('model.layers.0.self_attn.q_proj', 'a')."""
    name = key.removeprefix(PREFIX)
    for suffix, factor in FACTORS.items():
        if name.endswith("." + suffix):
            module = name[: -len(suffix) - 1]
            if module.split(".")[-1] in UNTARGETABLE:
                raise AdapterError(f"{where}: the adapter targets {module}, an embedding or the lm_head; only "
                                   "linears inside the layers are applied")
            return module, factor
    if name.endswith(".lora_B.bias"):
        raise AdapterError(f"{where}: tensor {key} is a bias on lora_B (lora_bias); it is not applied")
    if "lora_magnitude_vector" in name:
        raise AdapterError(f"{where}: tensor {key} is a DoRA magnitude vector; DoRA is not applied")
    if "lora_embedding" in name:
        raise AdapterError(f"{where}: tensor {key} targets an embedding; only linears inside the layers are applied")
    raise AdapterError(f"{where}: tensor {key} is not a LoRA factor (expected '<module>.lora_A.weight' or "
                       "'<module>.lora_B.weight')")


def split_fused(pairs: dict[str, LoraPair], config: ModelConfig | None, where: str) -> dict[str, LoraPair]:
    """Fused checkpoint modules (Phi-3's qkv_proj, gate_up_proj) into their parts: A shared, B split by rows."""
    fused_names = {whole for arch in ARCHITECTURES.values() for whole in arch.fused_weights}
    out = {}
    for module, pair in pairs.items():
        whole = next((w for w in fused_names if module.endswith("." + w)), None)
        if whole is None:
            out[module] = pair
            continue
        if config is None:
            raise AdapterError(f"{where}: {module} is fused; reading it needs the base model's config to split it")
        parts = architecture(config.model_type).fused_weights.get(whole)
        if parts is None:
            raise AdapterError(f"{where}: {module} is fused, and a {config.model_type} base has no {whole}")
        rows, start, prefix = part_rows(config), 0, module[: -len(whole)]
        if pair.b.shape[0] != sum(rows[p] for p in parts):
            raise AdapterError(f"{where}: {module} lora_B has {pair.b.shape[0]} rows; the base's "
                               f"{' + '.join(parts)} have {' + '.join(str(rows[p]) for p in parts)}")
        for part in parts:
            out[prefix + part] = LoraPair(pair.a, np.ascontiguousarray(pair.b[start:start + rows[part]]))
            start += rows[part]
    return out


def read_peft_folder(folder: Path, name: str, config: ModelConfig | None = None) -> LoraAdapter:
    """A PEFT LoRA folder as a LoraAdapter, scale folded into B. `config` (the base's) splits fused modules."""
    folder = Path(folder)
    where = str(folder)
    if not (folder / CONFIG).is_file():
        raise AdapterError(f"{where}: no {CONFIG}; not a PEFT adapter folder")
    cfg = read_json(folder / CONFIG)
    check_supported(cfg, where)
    if not (folder / WEIGHTS).is_file():
        if (folder / PICKLED).is_file():
            raise AdapterError(f"{where}: only {PICKLED} (a pickle, which could run code when loaded) is there; "
                               f"save the adapter as {WEIGHTS} (PEFT's save_pretrained does by default)")
        raise AdapterError(f"{where}: no {WEIGHTS}")
    try:
        shard = _Shard(folder / WEIGHTS)
        tensors = {key: shard.get(key) for key in shard.header}
    except SourceError as e:
        raise AdapterError(f"{where}: {e}") from None
    halves: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        module, factor = factor_name(key, where)
        halves.setdefault(module, {})[factor] = value
    pairs = {}
    for module, half in halves.items():
        if set(half) != {"a", "b"}:
            raise AdapterError(f"{where}: {module} has lora_{'A' if 'a' in half else 'B'} but not the other factor")
        if not targeted(cfg, module):
            raise AdapterError(f"{where}: weights for {module}, which target_modules {cfg.get('target_modules')!r} "
                               "does not name")
        a, b = half["a"], half["b"]
        r, scale = module_scale(cfg, module)
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != r or b.shape[1] != r:
            raise AdapterError(f"{where}: {module} has lora_A {list(a.shape)} and lora_B {list(b.shape)}, "
                               f"expected rank {r} ([{r}, in] and [out, {r}])")
        pairs[module] = LoraPair(np.ascontiguousarray(a, np.float32), (b * np.float32(scale)).astype(np.float32))
    if not pairs:
        raise AdapterError(f"{where}: {WEIGHTS} holds no LoRA factors")
    keys = ("r", "lora_alpha", "use_rslora", "rank_pattern", "alpha_pattern", "target_modules",
            "base_model_name_or_path", "fan_in_fan_out")
    return LoraAdapter(name=name, pairs=split_fused(pairs, config, where), base_model_type=base_model_type(cfg),
                       source=where, metadata={k: cfg[k] for k in keys if k in cfg})


def base_model_type(cfg: dict) -> str | None:
    """The base's model_type where the config names its class ("Qwen2ForCausalLM" -> "qwen2"), else None."""
    cls = (cfg.get("auto_mapping") or {}).get("base_model_class") or ""
    stem = cls.removesuffix("ForCausalLM").lower()
    types = {t.removesuffix("_text"): t for t in ARCHITECTURES}
    return types.get(stem) if cls.endswith("ForCausalLM") else None
