"""Rotary embedding: the cos/sin caches GroupQueryAttention reads ([max_positions, rotary_dim/2]).

transformers' rules, computed in float32 as it does: default, linear, llama3 and LongRoPE frequencies, and a
separate table pair for sliding layers where they have their own base (Gemma 3).
"""
from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto

from .architectures import FULL, SLIDING
from .config import ModelConfig, RopeConfig
from .graph_writer import GraphWriter


def inverse_frequencies(rope: RopeConfig, head_dim: int, max_positions: int, long: bool = False) -> np.ndarray:
    """float32 [rotary_dim/2], after the configured scaling; `long` picks LongRoPE's long factors."""
    dim = int(head_dim * rope.partial_rotary_factor)
    exponents = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim
    if rope.kind == "longrope":
        ext = np.array(rope.long_factor if long else rope.short_factor, np.float32)
        return (1.0 / (ext * rope.theta ** exponents)).astype(np.float32)
    inv = (1.0 / (rope.theta ** exponents)).astype(np.float32).astype(np.float64)
    if rope.kind == "linear":
        inv = inv / rope.factor
    elif rope.kind == "llama3":
        old = rope.original_max_positions or max_positions
        low_wavelen, high_wavelen = old / rope.low_freq_factor, old / rope.high_freq_factor
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > low_wavelen, inv / rope.factor, inv)
        smooth = (old / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor)
        smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        inv = np.where(medium, smoothed, scaled)
    return inv.astype(np.float32)


def cos_sin_cache(rope: RopeConfig, head_dim: int, max_positions: int,
                  long: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin: float32 [max_positions, rotary_dim/2], times LongRoPE's attention factor."""
    inv = inverse_frequencies(rope, head_dim, max_positions, long)
    freqs = np.outer(np.arange(max_positions, dtype=np.float32), inv).astype(np.float32)
    return np.cos(freqs) * np.float32(rope.attention_factor), np.sin(freqs) * np.float32(rope.attention_factor)


def rotary_caches(g: GraphWriter, cfg: ModelConfig, io, total: str) -> dict[str, tuple[str, str]]:
    """FULL (and SLIDING where sliding layers have their own rope) -> (cos_cache, sin_cache) graph names.

    `total`: int32 scalar, the batch's total sequence length (LongRoPE picks its table by it)."""
    out = {FULL: _caches(g, cfg, cfg.rope, io, total, "")}
    if cfg.rope_local is not None:
        out[SLIDING] = _caches(g, cfg, cfg.rope_local, io, total, "_local")
    return out


def _caches(g: GraphWriter, cfg: ModelConfig, rope: RopeConfig, io, total: str, suffix: str) -> tuple[str, str]:
    if rope.kind != "longrope":
        cos, sin = cos_sin_cache(rope, cfg.head_dim, cfg.max_positions)
        return g.initializer(f"cos_cache{suffix}", cos.astype(io)), g.initializer(f"sin_cache{suffix}", sin.astype(io))
    return _longrope_caches(g, cfg, rope, io, total, suffix)


def _longrope_caches(g: GraphWriter, cfg: ModelConfig, rope: RopeConfig, io, total: str,
                     suffix: str) -> tuple[str, str]:
    """
    cos_cache_short -> Slice [:total] --+
                                        Where(total > original_max_positions) -> cos_cache [total, rotary_dim/2]
    cos_cache_long  -> Slice [:total] --+                                        (same for sin)
    As transformers does, one step uses one table for all its positions: the long factors once the sequence
    outgrows the original context. Keys already cached keep the rotation they were stored with, in both.
    Slicing first keeps the per-step copy at total rows rather than the whole table.
    """
    p = f"/model/rotary{suffix}"
    end = g.op("Reshape", [g.op("Cast", [total], f"{p}/Cast_total", to=TensorProto.INT64),
                           g.constant(f"{p}/shape1", np.array([1], np.int64))], f"{p}/Reshape_total")
    start = g.constant(f"{p}/start", np.array([0], np.int64))
    is_long = g.op("Greater", [total, g.constant(f"{p}/original_max", np.int32(rope.original_max_positions))],
                   f"{p}/Greater")
    tables = {name: cos_sin_cache(rope, cfg.head_dim, cfg.max_positions, long=(name == "long"))
              for name in ("short", "long")}
    out = []
    for k, kind in enumerate(("cos", "sin")):
        short, long = (g.op("Slice", [g.initializer(f"{kind}_cache{suffix}_{name}", tables[name][k].astype(io)),
                                      start, end], f"{p}/Slice_{kind}_{name}") for name in ("short", "long"))
        out.append(g.op("Where", [is_long, long, short], f"{p}/Where_{kind}"))
    return out[0], out[1]
