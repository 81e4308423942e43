"""The attention subgraph of one layer: projections, optional per-head Q/K norms, GroupQueryAttention, o_proj."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from .architectures import Architecture
from .config import ModelConfig
from .contract import GraphContract
from .graph_writer import MS_DOMAIN, GraphWriter
from .linear import linear
from .lora import LoraEmitter
from .precision import BuildOptions
from .weights import ATTN, LAYER, NORM, Weights


@dataclass(frozen=True)
class AttentionParts:
    """What the attention subgraph reads from the build: the writer, the model, its weights and cache names."""

    g: GraphWriter
    cfg: ModelConfig
    arch: Architecture
    opts: BuildOptions
    w: Weights
    contract: GraphContract
    rms_norm: Callable[[str, str, str, int], str]  # (node prefix, x, weight name, size) -> normed x
    lora: LoraEmitter | None = None  # a LoRA build's sites


class AttentionLengths(NamedTuple):
    seqlens_k: str  # int32 [B]: tokens in each row's cache after this step, minus one
    total: str  # int32 []: the batch's total sequence length
    query_seqlens: str  # int32 [B]: valid tokens of each row in this step; "" in a graph without it


# hidden [B, S, H] -> attention output [B, S, H]; the layer's cache is read and written in place
def attention(e: AttentionParts, i: int, x: str, lengths: AttentionLengths,
              rotary: dict[str, tuple[str, str]]) -> str:
    """
    x -> qkv_proj (packed Q|K|V) ------------------------------------------------+
    qk_norm: -> Split -> Q, K: Reshape [B,S,heads,hd] -> RMSNorm -> Reshape --> GroupQueryAttention -> o_proj
    GroupQueryAttention: this layer's rotary tables fused, past/present cache, sliding window, soft-cap, scale.
    A LoRA build adds each row's adapter to the packed Q|K|V and to o_proj's output (lora.py).
    """
    g, cfg, prefix, p = e.g, e.cfg, LAYER.format(i=i), f"/model/layers.{i}/attn"
    names = [prefix + ATTN[k] + ".weight" for k in "qkv"]
    shapes = [(cfg.q_size, cfg.hidden_size), (cfg.kv_size, cfg.hidden_size), (cfg.kv_size, cfg.hidden_size)]
    has_bias = e.arch.qkv_bias or cfg.attention_bias
    biases = [prefix + ATTN[k] + ".bias" for k in "qkv"] if has_bias else None
    qkv = linear(g, f"{p}/qkv_proj", x, e.w, names, shapes, e.opts, e.opts.bits, biases)
    if e.lora is not None:
        qkv = e.lora.add(i, "qkv", x, qkv)
    qkv_inputs = qk_normed(e, i, qkv) if e.arch.qk_norm else [qkv, "", ""]
    past_k, past_v = e.contract.past_names(i)
    present_k, present_v = e.contract.present_names(i)
    cos, sin = rotary[cfg.layer_rope(i)]
    inputs = qkv_inputs + [past_k, past_v, lengths.seqlens_k, lengths.total, cos, sin] + [""] * 7
    # without query_seqlens, stop after sin_cache: onnxruntime < 1.32 knows fewer optional inputs
    inputs = inputs + [lengths.query_seqlens] if lengths.query_seqlens else inputs[:9]
    attrs = {}
    if cfg.window(i):  # both count the query itself: measured against transformers past the window
        attrs["local_window_size"] = cfg.window(i)
        attrs["sliding_window_cache"] = 1  # this layer's cache stays window-sized; the op evicts in place
    if cfg.attn_softcap:
        attrs["softcap"] = cfg.attn_softcap
    attn, _, _ = g.node("GroupQueryAttention", inputs,
                        [f"{p}/GroupQueryAttention/output_0", present_k, present_v],
                        f"{p}/GroupQueryAttention", MS_DOMAIN, num_heads=cfg.num_heads,
                        kv_num_heads=cfg.num_kv_heads, do_rotary=1,
                        rotary_interleaved=int(e.arch.rotary_interleaved), scale=float(cfg.attn_scale), **attrs)
    o_name = prefix + ATTN["o"] + ".bias"
    o_bias = [o_name] if cfg.attention_bias and e.w.has(o_name) else None
    out = linear(g, f"{p}/o_proj", attn, e.w, [prefix + ATTN["o"] + ".weight"],
                 [(cfg.hidden_size, cfg.q_size)], e.opts, e.opts.bits, o_bias)
    return e.lora.add(i, "o", attn, out) if e.lora is not None else out


# packed qkv [B, S, (heads + 2 kv_heads) * hd] -> [Q, K, V], Q and K normed per head
def qk_normed(e: AttentionParts, i: int, qkv: str) -> list[str]:
    """
    The kernel's own q_norm_weight/k_norm_weight inputs are honoured only on CUDA and WebGPU, so the norms
    are explicit nodes and Q, K, V reach GroupQueryAttention as three inputs.
    """
    g, cfg, prefix, p = e.g, e.cfg, LAYER.format(i=i), f"/model/layers.{i}/attn"
    sizes = np.array([cfg.q_size, cfg.kv_size, cfg.kv_size], np.int64)
    q, k, v = g.node("Split", [qkv, g.constant(f"{p}/qkv_split", sizes)], 3, f"{p}/Split", axis=-1)
    return [head_norm(e, f"{p}/q_norm", q, prefix + NORM["q"], cfg.num_heads),
            head_norm(e, f"{p}/k_norm", k, prefix + NORM["k"], cfg.num_kv_heads), v]


# [B, S, heads * hd] -> [B, S, heads * hd]
def head_norm(e: AttentionParts, p: str, x: str, weight: str, heads: int) -> str:
    """x -> Reshape [B, S, heads, hd] -> RMSNorm over hd -> Reshape [B, S, heads * hd]"""
    g, hd = e.g, e.cfg.head_dim
    split = g.op("Reshape", [x, g.constant(f"{p}/heads_shape", np.array([0, 0, heads, hd], np.int64))],
                 f"{p}/Reshape_heads")
    normed = e.rms_norm(p, split, weight, hd)
    return g.op("Reshape", [normed, g.constant(f"{p}/flat_shape", np.array([0, 0, heads * hd], np.int64))],
                f"{p}/Reshape_flat")
