"""The decoder graph's I/O contract, declared once and shared by the builder and the runtime.

Version 1 (onnxruntime-genai's decoder contract plus two optional inputs):
  input_ids                   int64 [batch, seq]
  attention_mask              int64 [batch, total_seq]     ones for the tokens in the cache after this step
  past_key_values.{i}.key     kv    [batch, kv_heads, past_seq, head_dim]   (BNSH; may share a buffer with present)
  past_key_values.{i}.value   kv    [batch, kv_heads, past_seq, head_dim]
  logits_indices (optional)   int64 [n]   flat positions (row * seq + col) whose logits to compute;
                                          the default (empty) computes every position
  query_seqlens (optional)    int64 [batch] valid tokens of each right-padded row in this step (0 = idle row);
                                          the default (-1) derives min(seq, total) per row
  logits                      float32 [batch, seq, vocab], or [1, n, vocab] when logits_indices is given
  present.{i}.key / .value    kv    [batch, kv_heads, total_seq, head_dim]
The optional inputs are graph inputs with default initializers, so runtimes that do not know them
(onnxruntime-genai) run the graph unchanged; onnxruntime warns about such initializers on every load, and
`load_warnings` mutes exactly that warning. Sliding-window layers may keep window-sized caches
(`window_cache` in the manifest): their past/present buffers hold at least `window` rows, never the whole
sequence; a shared full-length buffer works too.

LoRA (builds with `lora_targets`) adds optional inputs, all with empty defaults, in a second graph beside the
plain one (`model.lora.onnx`; `model.onnx` stays the graph above, node for node):
  lora_index                  int64 [batch]    each row's adapter slot, 1..slots; 0: the base model (no adapter)
  lora.slot_of.{n}            int64 [W_n]      the slot of each factor column of sites of n modules:
                                               W_n = slots * n * rank, column c in slot c // (n * rank) + 1
  lora.{site}.a               io [W_n, in]     A of the site's n modules, slot after slot, module after module
                                               (a runtime may bind any range of whole slots: W_n shrinks)
  lora.{site}.b               io [W_n, out]    B.T (scale folded in) of each module in its rows and its own output
                                               columns (block-diagonal for a packed site)
A site is one (packed) linear: `layers.{i}.qkv` (q, k, v), `layers.{i}.o`, `.gate`, `.up`, `.down`; the manifest's `lora` lists each with its Hugging Face module names, their output columns
and the input width (`LoraSite`).
"""
from __future__ import annotations

from dataclasses import dataclass

CONTRACT_VERSION = 1

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
LOGITS_INDICES = "logits_indices"
QUERY_SEQLENS = "query_seqlens"
OPTIONAL_INPUTS = (LOGITS_INDICES, QUERY_SEQLENS)
LORA_INDEX = "lora_index"
LORA_SLOT_OF = "lora.slot_of.%d"
LORA_A = "lora.%s.a"
LORA_B = "lora.%s.b"
LORA_PREFIX = "lora."  # every factor input's name starts with it
LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")  # the linears a LoRA build can carry adapters on
LOGITS = "logits"
PAST_KEY = "past_key_values.%d.key"
PAST_VALUE = "past_key_values.%d.value"
PRESENT_KEY = "present.%d.key"
PRESENT_VALUE = "present.%d.value"


@dataclass(frozen=True)
class LoraSite:
    """One place where a LoRA build adds x @ A @ B to a linear's output: `modules` are the Hugging Face module
    names packed in its output ("model.layers.0.self_attn.q_proj", ...), each with its first output column and
    its rows; `in_dim` is the input width, `out_dim` the whole output's (packed Q|K|V)."""

    name: str  # "layers.0.qkv"
    in_dim: int
    out_dim: int
    modules: tuple[tuple[str, int, int], ...]  # (module name, first column, columns)

    @property
    def a_name(self) -> str:
        return LORA_A % self.name

    @property
    def b_name(self) -> str:
        return LORA_B % self.name

    def as_dict(self) -> dict:
        return {"name": self.name, "in": self.in_dim, "out": self.out_dim, "modules": [list(m) for m in self.modules]}

    @classmethod
    def from_dict(cls, d: dict) -> LoraSite:
        return cls(d["name"], int(d["in"]), int(d["out"]), tuple((m, int(c), int(n)) for m, c, n in d["modules"]))


@dataclass(frozen=True)
class GraphContract:
    """What a runtime needs to know to drive a decoder graph."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    kv_dtype: str  # "float32" | "float16"
    input_ids: str = INPUT_IDS
    attention_mask: str = ATTENTION_MASK
    logits: str = LOGITS
    past_key: str = PAST_KEY
    past_value: str = PAST_VALUE
    present_key: str = PRESENT_KEY
    present_value: str = PRESENT_VALUE
    version: int = CONTRACT_VERSION
    window_cache: tuple[tuple[int, int], ...] = ()  # (layer, window): past/present buffers of window size
    lora_sites: tuple[LoraSite, ...] = ()  # a LoRA build's sites (empty: no LoRA inputs)

    def window(self, layer: int) -> int | None:
        """The window of a layer whose cache is window-sized (GroupQueryAttention's sliding_window_cache)."""
        return dict(self.window_cache).get(layer)

    def past_names(self, layer: int) -> tuple[str, str]:
        return self.past_key % layer, self.past_value % layer

    def present_names(self, layer: int) -> tuple[str, str]:
        return self.present_key % layer, self.present_value % layer

    def genai_decoder_io(self) -> dict:
        """The `inputs`/`outputs` sections of genai_config.json's `model.decoder`."""
        return {
            "inputs": {
                "input_ids": self.input_ids,
                "attention_mask": self.attention_mask,
                "past_key_names": self.past_key,
                "past_value_names": self.past_value,
            },
            "outputs": {
                "logits": self.logits,
                "present_key_names": self.present_key,
                "present_value_names": self.present_value,
            },
        }

    @classmethod
    def from_genai_config(cls, genai: dict, kv_dtype: str, window_cache: dict | None = None,
                          lora: dict | None = None) -> "GraphContract":
        """Read the contract from any genai_config.json, ours or onnxruntime-genai's builder's;
        `window_cache` ({layer: window}) and `lora` ({"sites": [...]}) come from our manifest."""
        dec = genai["model"]["decoder"]
        ins, outs = dec.get("inputs", {}), dec.get("outputs", {})
        return cls(
            num_layers=int(dec["num_hidden_layers"]),
            num_kv_heads=int(dec["num_key_value_heads"]),
            head_dim=int(dec["head_size"]),
            kv_dtype=kv_dtype,
            input_ids=ins.get("input_ids", INPUT_IDS),
            attention_mask=ins.get("attention_mask", ATTENTION_MASK),
            logits=outs.get("logits", LOGITS),
            past_key=ins.get("past_key_names", PAST_KEY),
            past_value=ins.get("past_value_names", PAST_VALUE),
            present_key=outs.get("present_key_names", PRESENT_KEY),
            present_value=outs.get("present_value_names", PRESENT_VALUE),
            window_cache=tuple(sorted((int(k), int(v)) for k, v in (window_cache or {}).items())),
            lora_sites=tuple(LoraSite.from_dict(d) for d in (lora or {}).get("sites", ())),
        )
