"""Our adapter folder: a valid PEFT LoRA folder whose scale is already in B, plus a small manifest.

`adapter_config.json` targets exactly the modules the adapter has (their full names), and `rank_pattern` and
`alpha_pattern` give each module lora_alpha = r, so PEFT's scale is 1 and PEFT itself loads the folder and computes
what we do. `adapter_model.safetensors` holds PEFT's keys (`base_model.model.<module>.lora_A.weight` [r, in],
`.lora_B.weight` [out, r]) in float32. `llm_runtime_adapter.json` records what PEFT's files have no field for:

    {"format": 1, "name": "...", "base_model_type": "llama", "scale_folded": true}

It is read back by the PEFT reader (scale 1) with the manifest's name and model type.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import AdapterError
from ..model_builder.config import ModelConfig
from .lora import LoraAdapter
from .peft_folder import CONFIG, PREFIX, WEIGHTS, read_json, read_peft_folder

MANIFEST = "llm_runtime_adapter.json"
FORMAT = 1


def peft_config(adapter: LoraAdapter) -> dict:
    """A LoraConfig dict under which PEFT's scale is 1 for every module of `adapter`."""
    ranks = {module: pair.rank for module, pair in adapter.pairs.items()}
    common = Counter(ranks.values()).most_common(1)[0][0]
    # PEFT matches a pattern key as a regex against the module's name: escaped full names match only it
    odd = {re.escape(module): r for module, r in sorted(ranks.items()) if r != common}
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": common, "lora_alpha": common,
            "rank_pattern": odd, "alpha_pattern": dict(odd), "use_rslora": False, "use_dora": False,
            "bias": "none", "lora_dropout": 0.0, "fan_in_fan_out": False, "init_lora_weights": True,
            "inference_mode": True, "target_modules": sorted(ranks), "modules_to_save": None,
            "base_model_name_or_path": adapter.metadata.get("base_model_name_or_path")}


def write_folder(adapter: LoraAdapter, folder: Path) -> Path:
    """Write `adapter` as our folder (a PEFT folder with the scale in B, and the manifest)."""
    from safetensors.numpy import save_file

    if not adapter.pairs:
        raise AdapterError(f"adapter {adapter.name!r} has no factors to write")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for module, pair in adapter.pairs.items():
        tensors[f"{PREFIX}{module}.lora_A.weight"] = np.ascontiguousarray(pair.a, np.float32)
        tensors[f"{PREFIX}{module}.lora_B.weight"] = np.ascontiguousarray(pair.b, np.float32)
    save_file(tensors, str(folder / WEIGHTS))
    (folder / CONFIG).write_text(json.dumps(peft_config(adapter), indent=2) + "\n")
    manifest = {"format": FORMAT, "name": adapter.name, "base_model_type": adapter.base_model_type,
                "scale_folded": True}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return folder


def read_folder(folder: Path, name: str | None = None, config: ModelConfig | None = None) -> LoraAdapter:
    """Our folder, or any PEFT folder (without a manifest), as a LoraAdapter; `name` defaults to the manifest's."""
    folder = Path(folder)
    manifest = read_json(folder / MANIFEST) if (folder / MANIFEST).is_file() else {}
    if manifest.get("format", FORMAT) != FORMAT:
        raise AdapterError(f"{folder}: {MANIFEST} has format {manifest['format']!r}; this version reads {FORMAT}")
    adapter = read_peft_folder(folder, name or manifest.get("name") or folder.name, config)
    if manifest.get("base_model_type"):
        adapter = replace(adapter, base_model_type=manifest["base_model_type"])
    return adapter
