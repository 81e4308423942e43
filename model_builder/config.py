"""Typed model configuration built once from a Hugging Face `config.json` dict and validated.

The architecture's row says which keys its family reads and their defaults; everything the graph needs is
resolved here into plain numbers, once.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from .architectures import ACTIVATION_NAMES, FULL, SLIDING, Architecture, architecture
from .source import SourceError

ROPE_KINDS = ("default", "linear", "llama3", "longrope")


@dataclass(frozen=True)
class RopeConfig:
    theta: float = 10000.0
    kind: str = "default"  # one of ROPE_KINDS
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_positions: int = 0
    partial_rotary_factor: float = 1.0
    short_factor: tuple[float, ...] = ()  # longrope: per-frequency divisors up to original_max_positions
    long_factor: tuple[float, ...] = ()  # longrope: beyond it
    attention_factor: float = 1.0  # cos and sin are scaled by it (longrope)


@dataclass(frozen=True)
class ModelConfig:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    max_positions: int
    tie_embeddings: bool
    rope: RopeConfig
    attention_bias: bool = False
    mlp_bias: bool = False
    hidden_act: str = "silu"  # resolved: "silu" | "gelu_tanh" | "gelu"
    layer_types: tuple[str, ...] = ()  # FULL or SLIDING per layer
    sliding_window: int | None = None  # tokens a sliding layer attends to, itself included
    rope_local: RopeConfig | None = None  # sliding layers' rope when it differs (Gemma 3)
    attn_scale: float = 0.0  # applied to Q.K; 0 means head_dim ** -0.5
    attn_softcap: float = 0.0  # 0: none
    final_softcap: float = 0.0  # 0: none
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    def window(self, layer: int) -> int | None:
        """The sliding window of `layer`, or None for a global layer."""
        return self.sliding_window if self.layer_types[layer] == SLIDING else None

    def layer_rope(self, layer: int) -> str:
        """Which rope table pair `layer` reads: FULL, or SLIDING where sliding layers have their own."""
        return SLIDING if self.rope_local is not None and self.layer_types[layer] == SLIDING else FULL


def _ids(value) -> tuple[int, ...]:
    if value is None:
        return ()
    return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),)


def _rope(params: dict, cfg: dict, theta: float) -> RopeConfig:
    """One rope dict (transformers 5 `rope_parameters`, or 4.x `rope_scaling` merged with top-level keys)."""
    kind = params.get("rope_type", params.get("type", "default")) or "default"
    kind = "longrope" if kind == "su" else kind  # Phi-3's earlier name
    if kind not in ROPE_KINDS:
        raise SourceError(f"rope type {kind!r} is not supported (supported: {', '.join(ROPE_KINDS)})")
    max_positions = int(cfg.get("max_position_embeddings", 2048))
    # Phi-3 keeps the pretraining length at the top level, and transformers gives that one priority.
    original = int(cfg.get("original_max_position_embeddings") or params.get("original_max_position_embeddings") or 0)
    rope = RopeConfig(
        theta=float(params.get("rope_theta", theta)),
        kind=kind,
        factor=float(params.get("factor") or 1.0),
        low_freq_factor=float(params.get("low_freq_factor", 1.0)),
        high_freq_factor=float(params.get("high_freq_factor", 4.0)),
        original_max_positions=original,
        partial_rotary_factor=float(params.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))),
    )
    if kind != "longrope":
        return rope
    original = original or max_positions
    factor = float(params.get("factor") or max_positions / original)
    attention = params.get("attention_factor")
    if attention is None:
        attention = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    return replace(rope, factor=factor, original_max_positions=original, attention_factor=float(attention),
                   short_factor=tuple(float(f) for f in params["short_factor"]),
                   long_factor=tuple(float(f) for f in params["long_factor"]))


def _ropes(cfg: dict, arch: Architecture) -> tuple[RopeConfig, RopeConfig | None]:
    """(global rope, sliding layers' rope or None when they share it)."""
    params = dict(cfg.get("rope_parameters") or {})
    local_theta = float(cfg.get("rope_local_base_freq", arch.local_rope_theta or 0.0))
    if FULL in params or SLIDING in params:  # transformers 5, one dict per layer type (Gemma 3)
        full = _rope(params.get(FULL) or {}, cfg, float(cfg.get("rope_theta", arch.rope_theta)))
        local = _rope(params[SLIDING], cfg, local_theta) if params.get(SLIDING) else None
        return full, local
    flat = {**(cfg.get("rope_scaling") or {}), **params}
    full = _rope(flat, cfg, float(cfg.get("rope_theta", arch.rope_theta)))
    local = RopeConfig(theta=local_theta, partial_rotary_factor=full.partial_rotary_factor) if local_theta else None
    return full, local


def _activation(cfg: dict, arch: Architecture) -> str:
    name = cfg.get("hidden_activation") or cfg.get("hidden_act")
    if name is None:
        return arch.activation
    act = arch.activation_aliases.get(name) or ACTIVATION_NAMES.get(name)
    if act is None:
        raise SourceError(f"activation {name!r} is not supported (supported: {', '.join(ACTIVATION_NAMES)})")
    return act


def _optional(cfg: dict, key: str, honoured: bool) -> float:
    return float(cfg.get(key) or 0.0) if honoured else 0.0


def model_config(cfg: dict, generation_config: dict | None = None) -> ModelConfig:
    """Validate a config.json dict; every missing or inconsistent field is one clear SourceError."""
    gen = generation_config or {}
    try:
        arch = architecture(str(cfg["model_type"]))
        hidden = int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
        head_dim = int(cfg.get("head_dim") or hidden // heads)
        layers = int(cfg["num_hidden_layers"])
        rope, rope_local = _ropes(cfg, arch)
        scalar = cfg.get("query_pre_attn_scalar") if arch.query_pre_attn_scalar else None
        window = cfg.get("sliding_window")
        out = ModelConfig(
            model_type=arch.model_type,
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(cfg["intermediate_size"]),
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=head_dim,
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            max_positions=int(cfg.get("max_position_embeddings", 2048)),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            rope=rope,
            attention_bias=bool(cfg.get("attention_bias", False)),
            mlp_bias=bool(cfg.get("mlp_bias", False)),
            hidden_act=_activation(cfg, arch),
            layer_types=tuple(arch.layer_types(cfg, layers)),
            sliding_window=int(window) if window else None,
            rope_local=rope_local,
            attn_scale=float(scalar) ** -0.5 if scalar else head_dim ** -0.5,
            attn_softcap=_optional(cfg, "attn_logit_softcapping", arch.attn_softcap),
            final_softcap=_optional(cfg, "final_logit_softcapping", arch.final_softcap),
            bos_token_id=gen.get("bos_token_id", cfg.get("bos_token_id")),
            eos_token_ids=_ids(gen.get("eos_token_id", cfg.get("eos_token_id"))),
            pad_token_id=gen.get("pad_token_id", cfg.get("pad_token_id")),
            raw=cfg,
        )
    except KeyError as e:
        raise SourceError(f"config.json is missing the field {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise SourceError(f"config.json has an invalid value: {e}") from None
    _validate(out)
    return out


def folder_config(folder: Path) -> ModelConfig | None:
    """The ModelConfig of a folder's config.json (a Hugging Face folder, or a built one, which keeps it); None
    when the folder has none. A config.json that does not validate is a SourceError."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return None
    try:
        return model_config(json.loads(path.read_text()))
    except ValueError as e:  # JSON that does not parse
        raise SourceError(f"{path}: {e}") from None


def rotary_dim(cfg: ModelConfig, rope: RopeConfig) -> int:
    return int(cfg.head_dim * rope.partial_rotary_factor)


def _validate(out: ModelConfig) -> None:
    if out.num_heads % out.num_kv_heads:
        raise SourceError(f"num_attention_heads ({out.num_heads}) must be a multiple of num_key_value_heads ({out.num_kv_heads})")
    if out.head_dim % 16:
        raise SourceError(f"head_dim {out.head_dim} is not supported: GroupQueryAttention needs a multiple of 16")
    if min(out.vocab_size, out.hidden_size, out.num_layers, out.num_heads, out.head_dim) <= 0:
        raise SourceError("config.json has a non-positive size")
    if len(out.layer_types) != out.num_layers or not set(out.layer_types) <= {FULL, SLIDING}:
        raise SourceError(f"layer_types must name {FULL!r} or {SLIDING!r} for each of the {out.num_layers} layers")
    if out.sliding_window is not None and out.sliding_window < 1:
        raise SourceError(f"sliding_window must be positive, got {out.sliding_window}")
    for rope in (out.rope, out.rope_local):
        if rope is None:
            continue
        dim = rotary_dim(out, rope)
        if dim % 2 or not 0 < dim <= out.head_dim:
            raise SourceError(f"partial_rotary_factor {rope.partial_rotary_factor} gives an invalid rotary size {dim}")
        if rope.kind == "longrope" and not len(rope.short_factor) == len(rope.long_factor) == dim // 2:
            raise SourceError(f"longrope short_factor and long_factor need {dim // 2} values each")
