"""Random PEFT LoRA adapters on tiny models, and PEFT's own delta per linear: the reference every reader of ours
is checked against."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from llm_runtime.model_builder.config import ModelConfig, model_config


def base_config(hf: Path) -> ModelConfig:
    return model_config(json.loads((Path(hf) / "config.json").read_text()))


def peft_model(hf: Path, adapter: Path | None = None, seed: int = 0, **lora):
    """A PeftModel on the base at `hf`: loaded from the folder `adapter`, or new with random nonzero factors."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    if adapter is not None:
        return PeftModel.from_pretrained(base, adapter).eval()
    torch.manual_seed(seed)
    model = get_peft_model(base, LoraConfig(init_lora_weights=False, **lora)).eval()
    with torch.no_grad():  # PEFT's init gives small B; larger ones make a wrong scale or row order visible
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    return model


def save_peft(hf: Path, out: Path, seed: int = 0, **lora) -> Path:
    peft_model(hf, seed=seed, **lora).save_pretrained(out)
    return Path(out)


def peft_deltas(model, x_seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """PEFT module name (no prefix) -> (x [5, in], layer(x) - base_layer(x) [5, out]) for every LoRA linear."""
    import torch
    from peft.tuners.lora import LoraLayer

    rng = np.random.default_rng(x_seed)
    out = {}
    with torch.no_grad():
        for name, module in model.base_model.model.named_modules():
            if isinstance(module, LoraLayer):
                x = rng.standard_normal((5, module.in_features)).astype(np.float32)
                t = torch.from_numpy(x)
                out[name] = (x, (module(t) - module.base_layer(t)).numpy())
    return out


def logits(model, ids: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()
