"""Architectures as rows of a table keyed by `model_type`: what differs between decoder families is data.

A row states how its family reads config.json and shapes the graph; `config.py` resolves the numbers, `decoder.py`
reads the fields. Adding a family is adding a row (and, where a checkpoint fuses tensors, a name map).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

from .source import SourceError

Activation = Literal["silu", "gelu_tanh", "gelu"]
FULL, SLIDING = "full_attention", "sliding_attention"  # transformers' `layer_types` values
LayerTypes = Callable[[dict, int], tuple[str, ...]]  # (config.json, num layers) -> each layer's type
# config.json's `hidden_act` / `hidden_activation` -> the activation the graph emits (transformers' ACT2FN)
ACTIVATION_NAMES: dict[str, Activation] = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh",
                                           "gelu_new": "gelu_tanh", "gelu": "gelu"}


def no_sliding(cfg: dict, n: int) -> tuple[str, ...]:
    """Llama, Gemma: every layer attends to the whole sequence."""
    return (FULL,) * n


def every_layer_slides(cfg: dict, n: int) -> tuple[str, ...]:
    """Mistral, Phi-3: one `sliding_window` for every layer when it is set (`layer_types` is not read)."""
    return (SLIDING if cfg.get("sliding_window") else FULL,) * n


def upper_layers_slide(cfg: dict, n: int) -> tuple[str, ...]:
    """Qwen2/3: only with `use_sliding_window`, the layers from `max_window_layers` up (or as listed)."""
    if not cfg.get("use_sliding_window"):
        return (FULL,) * n
    start = int(cfg.get("max_window_layers", n))
    return tuple(cfg.get("layer_types") or (SLIDING if i >= start else FULL for i in range(n)))


def one_global_in(period: int, key: str | None = None) -> LayerTypes:
    """Gemma 2/3: as listed, else every `period`-th layer is global and the others slide (`key` overrides it)."""

    def layer_types(cfg: dict, n: int) -> tuple[str, ...]:
        p = int(cfg.get(key) or period) if key else period
        return tuple(cfg.get("layer_types") or (FULL if (i + 1) % p == 0 else SLIDING for i in range(n)))

    return layer_types


# Phi-3 stores Q|K|V and gate|up as one tensor each: checkpoint name -> the parts its rows stack, in order.
PHI3_FUSED = {"self_attn.qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
              "mlp.gate_up_proj": ("mlp.gate_proj", "mlp.up_proj")}


@dataclass(frozen=True)
class Architecture:
    model_type: str
    genai_type: str  # onnxruntime-genai's `model.type`
    activation: Activation = "silu"  # gated MLP activation when config.json names none
    activation_aliases: dict[str, Activation] = field(default_factory=dict)  # names this family reads its own way
    rotary_interleaved: bool = False
    rope_theta: float = 10000.0  # default rope base (Gemma 3 global layers: 1e6)
    local_rope_theta: float | None = None  # sliding layers' own rope base (Gemma 3: `rope_local_base_freq`)
    qkv_bias: bool = False  # Q/K/V carry biases whatever `attention_bias` says (Qwen2)
    qk_norm: bool = False  # per-head RMSNorm on Q and K before rotary (Qwen3, Gemma 3)
    norm_offset: float = 0.0  # RMSNorm scales by (offset + weight): Gemma's 1 + w, folded into the weight
    embed_scale: bool = False  # embeddings times sqrt(hidden_size), in the io dtype (Gemma)
    sandwich_norms: bool = False  # post-attention, pre- and post-feed-forward norms (Gemma 2/3)
    query_pre_attn_scalar: bool = False  # attention scale is query_pre_attn_scalar ** -0.5 (Gemma 2/3)
    attn_softcap: bool = False  # reads `attn_logit_softcapping` (Gemma 2; transformers ignores it for Gemma 3)
    final_softcap: bool = False  # reads `final_logit_softcapping`: tanh(logits / c) * c
    layer_types: LayerTypes = no_sliding  # which layers use `sliding_window`
    fused_weights: dict[str, tuple[str, ...]] = field(default_factory=dict)


_GEMMA = dict(activation="gelu_tanh", norm_offset=1.0, embed_scale=True)
_GEMMA_SANDWICH = dict(_GEMMA, sandwich_norms=True, query_pre_attn_scalar=True, final_softcap=True)

ARCHITECTURES: dict[str, Architecture] = {
    a.model_type: a
    for a in (
        Architecture("llama", genai_type="llama"),
        Architecture("mistral", genai_type="mistral", layer_types=every_layer_slides),
        Architecture("qwen2", genai_type="qwen2", qkv_bias=True, layer_types=upper_layers_slide),
        Architecture("qwen3", genai_type="qwen3", qk_norm=True, layer_types=upper_layers_slide),
        Architecture("phi3", genai_type="phi3", layer_types=every_layer_slides, fused_weights=PHI3_FUSED),
        Architecture("gemma", genai_type="gemma", **_GEMMA, activation_aliases={"gelu": "gelu_tanh"}),
        Architecture("gemma2", genai_type="gemma2", **_GEMMA_SANDWICH, attn_softcap=True,
                     layer_types=one_global_in(2)),
        Architecture("gemma3_text", genai_type="gemma3_text", **_GEMMA_SANDWICH, qk_norm=True, rope_theta=1e6,
                     local_rope_theta=10000.0, layer_types=one_global_in(6, "sliding_window_pattern")),
    )
}


def architecture(model_type: str) -> Architecture:
    """The table row for `model_type`, or one clear error listing what is supported."""
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise SourceError(f"unsupported model_type {model_type!r} (supported: {supported})") from None
