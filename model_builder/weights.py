"""Reads weights from a source one tensor at a time, fusing Q/K/V rows as data (a name list)."""
from __future__ import annotations

import numpy as np

from .config import ModelConfig
from .source import QuantBlocks, SourceError, WeightSource

LAYER = "model.layers.{i}."
ATTN = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj"}
MLP = {"gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}


class Weights:
    """Shape-checked access to a source's tensors by Hugging Face name."""

    def __init__(self, source: WeightSource, cfg: ModelConfig):
        self.source = source
        self.cfg = cfg
        self._names = set(source.names())

    def has(self, name: str) -> bool:
        return name in self._names

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in self._names:
            raise SourceError(f"the checkpoint has no tensor {name!r}")
        t = self.source.get(name)
        if tuple(t.shape) != tuple(shape):
            raise SourceError(f"tensor {name!r} has shape {tuple(t.shape)}, expected {tuple(shape)}")
        return t

    def matrix(self, names: list[str], shapes: list[tuple[int, int]]) -> np.ndarray:
        """float32 [sum(out), in]: the rows of several [out, in] matrices stacked (packed QKV)."""
        return np.concatenate([self.tensor(n, s) for n, s in zip(names, shapes)], axis=0)

    def blocks(self, names: list[str]) -> QuantBlocks | None:
        """The same stack as raw GGUF blocks, when every part is stored in one exact block format."""
        parts = [self.source.get_blocks(n) for n in names]
        if any(p is None for p in parts) or len({p.kind for p in parts}) != 1:
            return None
        data = np.concatenate([p.data for p in parts], axis=0)
        return QuantBlocks(parts[0].kind, data, (data.shape[0], parts[0].shape[1]))
