"""Typed model configuration built once from a Hugging Face `config.json` dict and validated."""
from __future__ import annotations

from dataclasses import dataclass, field

from .source import SourceError


@dataclass(frozen=True)
class RopeConfig:
    theta: float = 10000.0
    kind: str = "default"  # "default" | "linear" | "llama3"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_positions: int = 0
    partial_rotary_factor: float = 1.0


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
    hidden_act: str = "silu"
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


def _ids(value) -> tuple[int, ...]:
    if value is None:
        return ()
    return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),)


def _rope(cfg: dict) -> RopeConfig:
    # transformers 5 writes `rope_parameters`; 4.x wrote `rope_theta` plus optional `rope_scaling`.
    params = dict(cfg.get("rope_parameters") or {})
    scaling = cfg.get("rope_scaling") or {}
    params = {**scaling, **params}
    kind = params.get("rope_type", params.get("type", "default")) or "default"
    if kind not in ("default", "linear", "llama3"):
        raise SourceError(f"rope type {kind!r} is not supported (supported: default, linear, llama3)")
    return RopeConfig(
        theta=float(params.get("rope_theta", cfg.get("rope_theta", 10000.0))),
        kind=kind,
        factor=float(params.get("factor", 1.0)),
        low_freq_factor=float(params.get("low_freq_factor", 1.0)),
        high_freq_factor=float(params.get("high_freq_factor", 4.0)),
        original_max_positions=int(params.get("original_max_position_embeddings", 0) or 0),
        partial_rotary_factor=float(params.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))),
    )


def model_config(cfg: dict, generation_config: dict | None = None) -> ModelConfig:
    """Validate a config.json dict; every missing or inconsistent field is one clear SourceError."""
    gen = generation_config or {}
    try:
        hidden = int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
        head_dim = int(cfg.get("head_dim") or hidden // heads)
        out = ModelConfig(
            model_type=str(cfg["model_type"]),
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(cfg["intermediate_size"]),
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=head_dim,
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            max_positions=int(cfg.get("max_position_embeddings", 2048)),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            rope=_rope(cfg),
            attention_bias=bool(cfg.get("attention_bias", False)),
            mlp_bias=bool(cfg.get("mlp_bias", False)),
            hidden_act=str(cfg.get("hidden_act", "silu")),
            bos_token_id=gen.get("bos_token_id", cfg.get("bos_token_id")),
            eos_token_ids=_ids(gen.get("eos_token_id", cfg.get("eos_token_id"))),
            pad_token_id=gen.get("pad_token_id", cfg.get("pad_token_id")),
            raw=cfg,
        )
    except KeyError as e:
        raise SourceError(f"config.json is missing the field {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise SourceError(f"config.json has an invalid value: {e}") from None
    if out.num_heads % out.num_kv_heads:
        raise SourceError(f"num_attention_heads ({out.num_heads}) must be a multiple of num_key_value_heads ({out.num_kv_heads})")
    if out.head_dim % 16:
        raise SourceError(f"head_dim {out.head_dim} is not supported: GroupQueryAttention needs a multiple of 16")
    if min(out.vocab_size, out.hidden_size, out.num_layers, out.num_heads, out.head_dim) <= 0:
        raise SourceError("config.json has a non-positive size")
    return out
