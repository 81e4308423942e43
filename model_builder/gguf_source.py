"""GGUF files (llama.cpp): Hugging Face config, tensors and tokenizer rebuilt from the file alone, no torch.

Tensors are memory-mapped and dequantized one at a time with `gguf.quants.dequantize`. What GGUF changes and
we undo: tensor names (`blk.0.attn_q.weight`), the Q/K row order of llama-family files (llama.cpp's converter
interleaves rotary pairs), Gemma's norm weights (stored as 1 + w), and the tokenizer, stored as `tokenizer.ggml.*`
metadata instead of `tokenizer.json`.
"""
from __future__ import annotations

import functools
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import gguf
import numpy as np

from .gguf_blocks import CONVERTERS
from .gguf_tokenizer import build_tokenizer_files
from .recommended_sampling import GGUF_KEYS
from .source import QuantBlocks, SourceError, TokenizerFiles, ensure_file

QT = gguf.GGMLQuantizationType


@dataclass(frozen=True)
class GGUFArchitecture:
    """How one `general.architecture` maps onto a Hugging Face config.json."""

    model_type: str
    hf_class: str
    config_keys: dict[str, str]  # GGUF key after "<arch>." -> config.json key
    required: tuple[str, ...]  # config.json keys the file must provide
    defaults: dict[str, object] = field(default_factory=dict)
    permute_qk: bool = False  # llama.cpp's converter interleaved the rotary halves of q/k rows
    layer_tensors: dict[str, str] = field(default_factory=dict)  # this family's names over LAYER_TENSORS
    norm_shift: float = 0.0  # llama.cpp stored (shift + w) for every `*norm.weight`; subtracted on read
    derive: Callable[[dict], None] | None = None  # config values llama.cpp fixes in code, not in metadata


_LLAMA_KEYS = {
    "context_length": "max_position_embeddings",
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "block_count": "num_hidden_layers",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.key_length": "head_dim",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "rope.freq_base": "rope_theta",
}

_REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "rms_norm_eps")
_GEMMA3_KEYS = {
    **_LLAMA_KEYS,
    "attention.sliding_window": "sliding_window",
    "attention.sliding_window_pattern": "sliding_window_pattern",  # a period, or one bool per layer
    "rope.freq_base_swa": "rope_local_base_freq",
    "final_logit_softcapping": "final_logit_softcapping",
}


def _gemma3_config(cfg: dict) -> None:
    """llama.cpp's gemma3 code: scale 1/sqrt(head_dim), except the 27B (62 layers) 1/sqrt(hidden/heads);
    a sliding pattern stored per layer becomes `layer_types`."""
    big = cfg["num_hidden_layers"] == 62
    scalar = cfg["hidden_size"] // cfg["num_attention_heads"] if big else cfg["head_dim"]
    cfg.setdefault("query_pre_attn_scalar", scalar)
    pattern = cfg.get("sliding_window_pattern")
    if isinstance(pattern, list):
        cfg["layer_types"] = ["sliding_attention" if swa else "full_attention" for swa in pattern]
        del cfg["sliding_window_pattern"]


# Listed in the order error messages name them.
ARCHITECTURES = {
    "llama": GGUFArchitecture(
        model_type="llama",
        hf_class="LlamaForCausalLM",
        config_keys=_LLAMA_KEYS,
        required=_REQUIRED,
        defaults={"rope_theta": 10000.0, "max_position_embeddings": 2048, "hidden_act": "silu", "mlp_bias": False},
        permute_qk=True,
    ),
    "qwen2": GGUFArchitecture(
        model_type="qwen2",
        hf_class="Qwen2ForCausalLM",
        config_keys=_LLAMA_KEYS,
        required=_REQUIRED,
        defaults={"rope_theta": 1000000.0, "max_position_embeddings": 32768, "hidden_act": "silu"},
    ),
    "qwen3": GGUFArchitecture(
        model_type="qwen3",
        hf_class="Qwen3ForCausalLM",
        config_keys=_LLAMA_KEYS,
        required=_REQUIRED,
        defaults={"rope_theta": 1000000.0, "max_position_embeddings": 40960, "hidden_act": "silu"},
    ),
    "gemma3": GGUFArchitecture(
        model_type="gemma3_text",
        hf_class="Gemma3ForCausalLM",
        config_keys=_GEMMA3_KEYS,
        required=_REQUIRED,
        defaults={"rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "max_position_embeddings": 131072,
                  "hidden_activation": "gelu_pytorch_tanh", "sliding_window_pattern": 6},
        layer_tensors={"post_attention_norm.weight": "post_attention_layernorm.weight",
                       "ffn_norm.weight": "pre_feedforward_layernorm.weight",
                       "post_ffw_norm.weight": "post_feedforward_layernorm.weight"},
        norm_shift=1.0,
        derive=_gemma3_config,
    ),
}

# GGUF tensor name -> Hugging Face name; per-layer names sit under `blk.{i}.` / `model.layers.{i}.`.
GLOBAL_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
LAYER_TENSORS = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.bias": "self_attn.o_proj.bias",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
# Tensors that are configuration, not weights: llama3 rope scaling is stored as per-frequency divisors.
CONFIG_TENSORS = ("rope_freqs.weight",)
_LAYER_NAME = re.compile(r"blk\.(\d+)\.(.+)")
_QK_HEADS = {"q_proj": "num_attention_heads", "k_proj": "num_key_value_heads"}


def hf_tensor_name(gguf_name: str, layer_tensors: dict[str, str] = LAYER_TENSORS) -> str | None:
    """The Hugging Face name of a GGUF tensor, or None when the tables do not know it."""
    if gguf_name in GLOBAL_TENSORS:
        return GLOBAL_TENSORS[gguf_name]
    m = _LAYER_NAME.fullmatch(gguf_name)
    if m and m[2] in layer_tensors:
        return f"model.layers.{m[1]}.{layer_tensors[m[2]]}"
    return None


def unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp's `LlamaModel.permute` on the rows of w: [rows, ...] -> [rows, ...]."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@functools.cache
def _dequantizable(qtype: QT) -> bool:
    try:
        gguf.quants.dequantize(np.zeros(gguf.GGML_QUANT_SIZES[qtype][1], np.uint8), qtype)
    except (NotImplementedError, KeyError, ValueError):
        return False
    return True


def open_gguf(path: Path) -> gguf.GGUFReader:
    """A GGUF file's reader; SourceError for a file that is not one or is cut short."""
    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:  # the reader raises ValueError, IndexError, struct errors... on bad input
        raise SourceError(f"not a readable GGUF file: {path} ({type(e).__name__}: {e})") from None
    for t in reader.tensors:
        if t.data.nbytes != t.n_bytes:
            raise SourceError(f"truncated GGUF file: {path} (tensor {t.name} is cut short)")
    return reader


def _field_value(f):
    kind = f.types[0]
    if kind == gguf.GGUFValueType.ARRAY:
        return f.contents()
    value = f.contents()
    if kind == gguf.GGUFValueType.FLOAT32:
        return float(str(np.float32(value)))  # shortest decimal that round-trips: 1e-05, not 9.99999974e-06
    return value


class GGUFSource:
    """A WeightSource over one GGUF file."""

    def __init__(self, path: Path):
        self.path = ensure_file(Path(path), "GGUF file")
        self._reader = open_gguf(self.path)
        self._fields = self._reader.fields
        self._arch_name = self._meta("general.architecture")
        self.arch = ARCHITECTURES.get(self._arch_name)
        if self.arch is None:
            raise SourceError(
                f"{self.path.name}: GGUF architecture {self._arch_name!r} is not supported "
                f"(supported: {', '.join(ARCHITECTURES)})"
            )
        self._gguf = {t.name: t for t in self._reader.tensors}
        self._by_hf: dict[str, gguf.ReaderTensor] = {}
        unknown, layer_tensors = [], {**LAYER_TENSORS, **self.arch.layer_tensors}
        for t in self._reader.tensors:
            if not _dequantizable(t.tensor_type):
                raise SourceError(
                    f"{self.path.name}: tensor {t.name} has block type {t.tensor_type.name}, which is not supported"
                )
            hf = hf_tensor_name(t.name, layer_tensors)
            if hf is not None:
                self._by_hf[hf] = t
            elif t.name not in CONFIG_TENSORS:
                unknown.append(t.name)
        if unknown:
            raise SourceError(f"{self.path.name}: tensors with no Hugging Face name: {', '.join(unknown[:5])}")
        self.config = self._build_config()
        self.generation_config = self._build_generation_config()
        self.description = f"gguf:{self.path.resolve()} ({self._dominant_type()})"

    # -- metadata -------------------------------------------------------------------------------------------
    def _meta(self, key: str, default=None):
        f = self._fields.get(key)
        if f is None or not f.types:
            return default
        try:
            return _field_value(f)
        except UnicodeDecodeError:
            raise SourceError(f"{self.path.name}: metadata {key} is not valid UTF-8") from None

    def _build_config(self) -> dict:
        arch, prefix = self.arch, self._arch_name
        cfg: dict = {"model_type": arch.model_type, "architectures": [arch.hf_class]}
        for key, hf_key in arch.config_keys.items():
            value = self._meta(f"{prefix}.{key}")
            if value is not None:
                cfg[hf_key] = value
        missing = [k for k in arch.required if k not in cfg]
        if missing:
            raise SourceError(f"{self.path.name}: GGUF metadata lacks {', '.join(missing)} for {prefix}")
        for key, value in arch.defaults.items():
            cfg.setdefault(key, value)
        cfg.setdefault("num_key_value_heads", cfg["num_attention_heads"])
        cfg.setdefault("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
        embed = self._by_hf.get("model.embed_tokens.weight")
        if embed is None:
            raise SourceError(f"{self.path.name}: no token_embd.weight tensor")
        cfg["vocab_size"] = int(embed.shape[1])  # GGUF shapes are [in, out]: ne0 = hidden, ne1 = vocab
        if int(embed.shape[0]) != cfg["hidden_size"]:
            raise SourceError(f"{self.path.name}: token_embd is {list(embed.shape)}, hidden size {cfg['hidden_size']}")
        cfg["tie_word_embeddings"] = "lm_head.weight" not in self._by_hf
        cfg["attention_bias"] = "model.layers.0.self_attn.q_proj.bias" in self._by_hf
        scaling = self._rope_scaling(cfg)
        if scaling:
            cfg["rope_scaling"] = scaling
        for hf_key, key in (("bos_token_id", "bos"), ("eos_token_id", "eos"), ("pad_token_id", "padding")):
            if (token_id := self._meta(f"tokenizer.ggml.{key}_token_id")) is not None:
                cfg[hf_key] = int(token_id)
        cfg["torch_dtype"] = "float32"
        if arch.derive is not None:
            arch.derive(cfg)
        return cfg

    def _rope_scaling(self, cfg: dict) -> dict | None:
        """linear / yarn come from `rope.scaling.*`; llama3 only survives as the `rope_freqs` tensor."""
        p = f"{self._arch_name}.rope.scaling"
        kind, factor = self._meta(f"{p}.type"), self._meta(f"{p}.factor")
        original = self._meta(f"{p}.original_context_length")
        if kind == "linear" and factor:
            return {"rope_type": "linear", "factor": factor}
        if kind == "yarn" and factor:
            out = {"rope_type": "yarn", "factor": factor}
            return out | ({"original_max_position_embeddings": original} if original else {})
        if "rope_freqs.weight" in self._gguf:
            freqs = self._gguf["rope_freqs.weight"]
            divisors = gguf.quants.dequantize(freqs.data, freqs.tensor_type)
            return llama3_rope_scaling(divisors, cfg["rope_theta"], cfg["head_dim"], original or 8192)
        return None

    def _build_generation_config(self) -> dict:
        gen = {}
        if (bos := self._meta("tokenizer.ggml.bos_token_id")) is not None:
            gen["bos_token_id"] = int(bos)
        ends = [self._meta(f"tokenizer.ggml.{k}_token_id") for k in ("eos", "eot", "eom")]
        ends = list(dict.fromkeys(int(e) for e in ends if e is not None))
        if ends:
            gen["eos_token_id"] = ends[0] if len(ends) == 1 else ends
        if (pad := self._meta("tokenizer.ggml.padding_token_id")) is not None:
            gen["pad_token_id"] = int(pad)
        for key, name in GGUF_KEYS.items():  # the sampling the file recommends, if it says
            if (value := self._meta(key)) is not None:
                gen[name] = value
        return gen

    def _dominant_type(self) -> str:
        count = Counter()
        for t in self._reader.tensors:
            if len(t.shape) >= 2:
                count[t.tensor_type.name] += int(t.n_elements)
        return count.most_common(1)[0][0] if count else "F32"

    # -- tensors --------------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._by_hf)

    def _tensor(self, name: str) -> gguf.ReaderTensor:
        t = self._by_hf.get(name)
        if t is None:
            raise SourceError(f"{self.path.name}: no tensor {name}")
        return t

    def _hf_order(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Undo llama.cpp's q/k row permutation (rows only, so it applies to raw blocks as well)."""
        proj = name.split(".")[-2]
        if not self.arch.permute_qk or proj not in _QK_HEADS:
            return rows
        n_head = int(self.config[_QK_HEADS[proj]])
        if rows.shape[0] % (2 * n_head):
            raise SourceError(f"{self.path.name}: {name} has {rows.shape[0]} rows, not a multiple of 2x{n_head} heads")
        return unpermute_rows(rows, n_head)

    def get(self, name: str) -> np.ndarray:
        t = self._tensor(name)
        w = gguf.quants.dequantize(t.data, t.tensor_type)
        if t.tensor_type == QT.F32:
            w = w.copy()  # detach from the memory map
        shape = tuple(int(d) for d in reversed(t.shape))
        if w.shape != shape:
            raise SourceError(f"{self.path.name}: {t.name} dequantized to {w.shape}, expected {shape}")
        if self.arch.norm_shift and name.endswith("norm.weight"):
            w = w - np.float32(self.arch.norm_shift)
        return np.ascontiguousarray(self._hf_order(name, w.astype(np.float32, copy=False)))

    def tensor_format(self, name: str) -> str:
        return self._tensor(name).tensor_type.name

    def get_blocks(self, name: str) -> QuantBlocks | None:
        """Raw blocks of a 2-D tensor stored in a type `gguf_blocks` converts exactly, rows in HF order."""
        t = self._tensor(name)
        if t.tensor_type.name not in CONVERTERS or len(t.shape) != 2:
            return None
        data = np.ascontiguousarray(self._hf_order(name, np.array(t.data, dtype=np.uint8)))
        return QuantBlocks(kind=t.tensor_type.name, data=data, shape=(int(t.shape[1]), int(t.shape[0])))

    # -- tokenizer ------------------------------------------------------------------------------------------
    def tokenizer_files(self) -> TokenizerFiles:
        return build_tokenizer_files(self._meta, self.config.get("max_position_embeddings"))


def llama3_rope_scaling(divisors: np.ndarray, theta: float, head_dim: int, original: int) -> dict | None:
    """Recover llama3 `rope_scaling` from llama.cpp's per-frequency divisors [head_dim/2].

    The divisors fix `factor` and, in the smooth band, `original / (high - low)` and `low / (high - low)`;
    `original` itself is not stored, so the caller's value (llama.cpp's default 8192) is kept and low/high
    follow from it. Any such triple gives the same frequencies."""
    f = np.asarray(divisors, dtype=np.float64).reshape(-1)
    factor = float(f.max())
    if factor <= 1.0 + 1e-6:
        return None
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    mid = (f > 1.0 + 1e-4) & (f < factor * (1 - 1e-5))
    if mid.sum() < 2 or len(f) != len(inv):
        raise SourceError("rope_freqs cannot be expressed as llama3 rope_scaling (too few smooth-band frequencies)")
    smooth = (1.0 / f[mid] - 1.0 / factor) / (1.0 - 1.0 / factor)
    slope, intercept = np.polyfit(inv[mid] / (2 * math.pi), smooth, 1)  # smooth = a / wavelen + b
    span = original / slope
    low = -intercept * span
    return {
        "rope_type": "llama3",
        "factor": round(factor, 4),
        "low_freq_factor": round(low, 4),
        "high_freq_factor": round(low + span, 4),
        "original_max_position_embeddings": int(original),
    }
