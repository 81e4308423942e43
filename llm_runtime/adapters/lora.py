"""One LoRA adapter in memory, whatever file it came from: low-rank factors per linear, in the base model's
Hugging Face module names, with the adapter's scale already folded into B.

A linear W [out, in] with an adapter computes y = x @ W.T + (x @ A.T) @ B.T, where A [rank, in] and B [out, rank]
(PEFT's lora_A and lora_B weights) and B carries the scale: lora_alpha / rank, or lora_alpha / sqrt(rank) with
rsLoRA. Every reader (PEFT folder, llama.cpp GGUF LoRA, onnxruntime-genai's .onnx_adapter, our own folder) ends
here, and every writer starts here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class LoraPair:
    """The factors of one linear: a float32 [rank, in], b float32 [out, rank] (scale folded in)."""

    a: np.ndarray
    b: np.ndarray

    @property
    def rank(self) -> int:
        return self.a.shape[0]


@dataclass(frozen=True)
class LoraAdapter:
    """`pairs` maps a module name such as "model.layers.3.self_attn.q_proj" (no "base_model.model." prefix, no
    ".weight") to its factors. `base_model_type` is the base's config.model_type where the file says it."""

    name: str
    pairs: dict[str, LoraPair]
    base_model_type: str | None = None
    source: str = ""  # where it was read from, for messages
    metadata: dict = field(default_factory=dict)  # what the file said beyond the factors (alpha, rank, targets)

    @property
    def rank(self) -> int:
        """The largest rank over its linears."""
        return max((p.rank for p in self.pairs.values()), default=0)

    @property
    def nbytes(self) -> int:
        return sum(p.a.nbytes + p.b.nbytes for p in self.pairs.values())
