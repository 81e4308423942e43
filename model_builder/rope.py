"""Rotary embedding tables: the cos/sin caches GroupQueryAttention reads ([max_positions, rotary_dim/2])."""
from __future__ import annotations

import math

import numpy as np

from .config import ModelConfig


def inverse_frequencies(cfg: ModelConfig) -> np.ndarray:
    """float64 [rotary_dim/2], after the configured scaling (transformers' rules)."""
    rope = cfg.rope
    dim = int(cfg.head_dim * rope.partial_rotary_factor)
    inv = 1.0 / (rope.theta ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim))
    inv = inv.astype(np.float32).astype(np.float64)
    if rope.kind == "linear":
        inv = inv / rope.factor
    elif rope.kind == "llama3":
        old = rope.original_max_positions or cfg.max_positions
        low_wavelen, high_wavelen = old / rope.low_freq_factor, old / rope.high_freq_factor
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > low_wavelen, inv / rope.factor, inv)
        smooth = (old / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor)
        smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        inv = np.where(medium, smoothed, scaled)
    return inv.astype(np.float32)


def cos_sin_cache(cfg: ModelConfig, max_positions: int) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin: float32 [max_positions, rotary_dim/2]; computed in float32 as transformers does."""
    inv = inverse_frequencies(cfg)
    freqs = np.outer(np.arange(max_positions, dtype=np.float32), inv).astype(np.float32)
    return np.cos(freqs), np.sin(freqs)
