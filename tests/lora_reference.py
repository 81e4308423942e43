"""Random PEFT LoRA adapters on a transformers model, and the same adapters as LoraAdapter objects: the reference
side of the LoRA tests (the file-format readers are tested on their own)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from llm_runtime.adapters import LoraAdapter, LoraPair

PREFIX = "base_model.model."


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    rank: int
    alpha: float
    targets: tuple[str, ...]  # PEFT target module names ("q_proj", ...)
    rslora: bool = False
    seed: int = 0
    std: float = 0.1  # of the random A and B (PEFT starts B at zero, which would add nothing)


def peft_model(base, specs: list[AdapterSpec]):
    """`base` (a transformers model, changed in place) wrapped with one random PEFT adapter per spec."""
    from peft import LoraConfig, get_peft_model

    model = None
    for spec in specs:
        config = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, target_modules=list(spec.targets), lora_dropout=0.0,
                            use_rslora=spec.rslora, init_lora_weights=False)
        if model is None:
            model = get_peft_model(base, config, adapter_name=spec.name)
        else:
            model.add_adapter(spec.name, config)
        generator = torch.Generator().manual_seed(spec.seed)
        with torch.no_grad():
            for key, p in model.named_parameters():
                if f".{spec.name}." in key and "lora_" in key:
                    p.copy_(torch.randn(p.shape, generator=generator) * spec.std)
    return model.eval()


def lora_adapter(model, spec: AdapterSpec) -> LoraAdapter:
    """The spec's adapter read out of a PEFT model's state dict, its scale folded into B."""
    scale = spec.alpha / (spec.rank ** 0.5 if spec.rslora else spec.rank)
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    pairs = {}
    for key, a in state.items():
        if key.endswith(f"lora_A.{spec.name}.weight"):
            module = key[len(PREFIX):-len(f".lora_A.{spec.name}.weight")]
            b = state[key.replace("lora_A", "lora_B")]
            pairs[module] = LoraPair(np.ascontiguousarray(a), np.ascontiguousarray(b * scale, dtype=np.float32))
    return LoraAdapter(spec.name, pairs, source="peft test adapter")


def peft_logits(model, name: str | None, ids: list[int]) -> np.ndarray:
    """float32 [S, V]: the logits of every position of `ids` under adapter `name` (None: the base model)."""
    with torch.no_grad():
        if name is None:
            with model.disable_adapter():
                return model(torch.tensor([ids])).logits[0].float().numpy()
        model.set_adapter(name)
        return model(torch.tensor([ids])).logits[0].float().numpy()


def peft_greedy(model, name: str | None, ids: list[int], n: int) -> tuple[list[int], list[float]]:
    """`n` greedy tokens under `name` (no stop), and the gap between the top two logits at each."""
    out, gaps = [], []
    seq = list(ids)
    for _ in range(n):
        logits = peft_logits(model, name, seq)[-1]
        top2 = np.sort(logits)[-2:]
        out.append(int(logits.argmax()))
        gaps.append(float(top2[1] - top2[0]))
        seq.append(out[-1])
    return out, gaps
