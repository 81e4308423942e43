"""Reads weights from a source one tensor at a time, by Hugging Face name, shape-checked.

Fusing and splitting are data: Q/K/V (and gate/up) are stacked by name lists for packed projections, and
checkpoints that store them fused (Phi-3's `qkv_proj`, `gate_up_proj`) are split by the architecture's name map.
"""
from __future__ import annotations

import numpy as np

from .architectures import architecture
from .config import ModelConfig
from .quant_summary import QuantSummary
from .source import QuantBlocks, SourceError, WeightSource

LAYER = "model.layers.{i}."
ATTN = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj"}
MLP = {"gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
NORM = {"input": "input_layernorm.weight", "post_attention": "post_attention_layernorm.weight",
        "pre_feedforward": "pre_feedforward_layernorm.weight", "post_feedforward": "post_feedforward_layernorm.weight",
        "q": "self_attn.q_norm.weight", "k": "self_attn.k_norm.weight"}


def part_rows(cfg: ModelConfig) -> dict[str, int]:
    """Rows of each projection that a fused checkpoint tensor may stack."""
    return {ATTN["q"]: cfg.q_size, ATTN["k"]: cfg.kv_size, ATTN["v"]: cfg.kv_size,
            MLP["gate"]: cfg.intermediate_size, MLP["up"]: cfg.intermediate_size}


class Weights:
    """Shape-checked access to a source's tensors by Hugging Face name."""

    def __init__(self, source: WeightSource, cfg: ModelConfig):
        self.source = source
        self.cfg = cfg
        self._names = set(source.names())
        self._parts, self._fused_rows = self._split_map(architecture(cfg.model_type).fused_weights)
        self._fused: tuple[str, np.ndarray] | None = None  # the last fused tensor read: its parts come in a row
        self.summary = QuantSummary()

    def _split_map(self, fused: dict[str, tuple[str, ...]]) -> tuple[dict[str, tuple[str, int, int]], dict[str, int]]:
        """(part name -> (fused checkpoint name, first row, end row), fused name -> rows) for those present."""
        rows, parts, totals = part_rows(self.cfg), {}, {}
        for i in range(self.cfg.num_layers):
            for whole, names in fused.items():
                for suffix in (".weight", ".bias"):
                    src = LAYER.format(i=i) + whole + suffix
                    if src not in self._names:
                        continue
                    start = 0
                    for name in names:
                        parts[LAYER.format(i=i) + name + suffix] = (src, start, start + rows[name])
                        start += rows[name]
                    totals[src] = start
        return parts, totals

    def has(self, name: str) -> bool:
        return name in self._names or name in self._parts

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name in self._parts:
            t = self._part(name)
        elif name in self._names:
            t = self.source.get(name)
        else:
            raise SourceError(f"the checkpoint has no tensor {name!r}")
        if tuple(t.shape) != tuple(shape):
            raise SourceError(f"tensor {name!r} has shape {tuple(t.shape)}, expected {tuple(shape)}")
        return t

    def _part(self, name: str) -> np.ndarray:
        src, start, end = self._parts[name]
        if self._fused is None or self._fused[0] != src:
            whole = self.source.get(src)
            if whole.shape[0] != self._fused_rows[src]:
                raise SourceError(f"tensor {src!r} has {whole.shape[0]} rows, expected {self._fused_rows[src]} "
                                  f"({', '.join(n for n, (s, _, _) in self._parts.items() if s == src)})")
            self._fused = (src, whole)
        return self._fused[1][start:end]

    def matrix(self, names: list[str], shapes: list[tuple[int, int]]) -> np.ndarray:
        """float32 [sum(out), in]: the rows of several [out, in] matrices stacked (packed QKV)."""
        return np.concatenate([self.tensor(n, s) for n, s in zip(names, shapes)], axis=0)

    def format(self, name: str) -> str:
        """The storage format of a tensor (GGUF type name, or safetensors dtype), of the fused tensor for a part."""
        src = self._parts[name][0] if name in self._parts else name
        return self.source.tensor_format(src)

    def blocks(self, name: str) -> QuantBlocks | None:
        """A tensor's raw GGUF blocks (rows in Hugging Face order), None for float tensors and fused parts."""
        if name in self._parts:
            return None
        return self.source.get_blocks(name)
