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
    """`n` greedy tokens under `name` (None: the base model; no stop), and the gap between the top two logits at
    each."""
    def run():
        out = model.generate(input_ids=torch.tensor([ids]), do_sample=False, max_new_tokens=n, min_new_tokens=n,
                             eos_token_id=None, pad_token_id=0, output_logits=True, return_dict_in_generate=True)
        top2 = [torch.topk(step[0].float(), 2).values for step in out.logits]
        return out.sequences[0, len(ids):].tolist(), [float(t[0] - t[1]) for t in top2]

    with torch.no_grad():
        if name is None:
            with model.disable_adapter():
                return run()
        model.set_adapter(name)
        return run()
