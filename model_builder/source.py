"""The interface every weight source (Hugging Face folder, GGUF file) offers the builder.

Names and orientations follow Hugging Face: `model.layers.{i}.self_attn.q_proj.weight` is [out, in].
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class QuantBlocks:
    """Raw GGUF blocks of one [out, in] matrix (converted exactly by `gguf_blocks` where an encoding exists)."""

    kind: str  # the GGUF type name: "Q4_0", "Q4_K", "Q6_K", ...
    data: np.ndarray  # uint8 [out, n_blocks * bytes_per_block], rows in Hugging Face order
    shape: tuple[int, int]  # (out, in)


@dataclass
class TokenizerFiles:
    """What the output folder needs to tokenize: file name -> JSON-serialisable content or text."""

    files: dict[str, object] = field(default_factory=dict)
    chat_template: str | None = None


class WeightSource(Protocol):
    config: dict  # a Hugging Face config.json dict (model_type, hidden_size, ...)
    generation_config: dict  # a generation_config.json dict (eos_token_id, ...)
    description: str  # for the manifest: "hf:/path" or "gguf:/path (Q4_1)"

    def names(self) -> list[str]: ...

    def get(self, name: str) -> np.ndarray:
        """float32 tensor in Hugging Face layout."""
        ...

    def get_blocks(self, name: str) -> QuantBlocks | None:
        """Raw blocks when the source stores the 2-D tensor `name` in a quantized GGUF type, else None."""
        ...

    def tensor_format(self, name: str) -> str:
        """How `name` is stored: "F32", "F16", "BF16", or a GGUF block type name ("Q4_1", "Q6_K", ...)."""
        ...

    def tokenizer_files(self) -> TokenizerFiles: ...


class SourceError(Exception):
    """Bad input in a model source: one clear line for the user."""


def ensure_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise SourceError(f"{what} not found: {path}")
    return path
