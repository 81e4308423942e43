"""Precisions, build targets (the execution provider a graph is built for) and which pairs the builder supports:
capability data, not branches. The runtime's `llm_runtime.graph.providers.Provider` is the provider a session runs on."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from .contract import LORA_TARGETS
from .source import SourceError


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    INT4 = "int4"


class BuildTarget(str, Enum):
    CPU = "cpu"
    CUDA = "cuda"
    DML = "dml"


# (precision, target) -> activation / KV-cache dtype of the graph.
IO_DTYPE: dict[tuple[Precision, BuildTarget], type] = {
    (Precision.FP32, BuildTarget.CPU): np.float32,
    (Precision.INT8, BuildTarget.CPU): np.float32,
    (Precision.INT4, BuildTarget.CPU): np.float32,
    (Precision.FP32, BuildTarget.CUDA): np.float32,
    (Precision.FP16, BuildTarget.CUDA): np.float16,
    (Precision.INT8, BuildTarget.CUDA): np.float16,
    (Precision.INT4, BuildTarget.CUDA): np.float16,
    (Precision.FP32, BuildTarget.DML): np.float32,
    (Precision.FP16, BuildTarget.DML): np.float16,
    (Precision.INT4, BuildTarget.DML): np.float16,
}

WEIGHT_BITS = {Precision.INT8: 8, Precision.INT4: 4}
QUANTIZERS = ("search", "rtn")
GRIDS = ("symmetric", "zero_points", "offsets")
# lm_head (and tied embedding) bits of a quantized CPU build when the table is quantized from float weights (an
# exact GGUF import keeps the file's own table): 8, as llama.cpp's Q4_K_M keeps its output table at Q6_K. At 4 bits
# the table cost the default model +6.2% perplexity even with the searched offsets grid
# (benchmarks/results/2026-12-06-epyc-avx2.md).
# GPU builds keep the build's bits: 8-bit MatMulNBits was not measured on their kernels here.
LM_HEAD_BITS = 8
ACTIVATIONS = ("mixed", "int8", "float")
# Under "mixed", the linears whose MatMulNBits reads float activations (accuracy_level 0), the rest int8 (4): the
# RMSNorm output into qkv_proj carries outlier channels (10x the median channel's peak on the default model) that
# int8 rounding per block of 32 hurts. Measured on the default model's exact build
# (benchmarks/results/2026-12-02-avx512.md): KL from
# fp32 0.0028 with int8 everywhere, 0.0021 with float qkv_proj inputs for 1.04x the decode time (down_proj too:
# 0.0016, but 1.3x; float everywhere: 0, but ~10x, the 8-bit lm_head's float path). The cost beyond time: the float
# kernel rounds a one-row call unlike a several-row one, so greedy tokens batched and alone can part on near-ties.
FLOAT_INPUT_LINEARS = ("qkv_proj",)
# The quantization recipe's version, in cached folder names: a default build from an older recipe is not reused.
RECIPE = 2
GENAI_PROVIDER = {BuildTarget.CPU: None, BuildTarget.CUDA: "cuda", BuildTarget.DML: "dml"}


@dataclass(frozen=True)
class BuildOptions:
    precision: Precision = Precision.INT4
    target: BuildTarget = BuildTarget.CPU
    block_size: int = 32
    symmetric: bool = True  # False: packed uint8 zero points
    # float per-block offsets (value = q * scale + offset, Q4_1-like) beside MatMulNBits; None: the default grid
    # (offsets in an int4 CPU build with the search quantizer, where they were measured; else `symmetric`'s)
    offsets: bool | None = None
    quantizer: str = "search"  # float weights -> blocks: "search" (scale_search.py) or "rtn" (round-to-nearest)
    requantize: bool = False  # GGUF: True dequantizes every tensor and quantizes it again instead of the exact import
    activations: str = "mixed"  # CPU MatMulNBits activations: "mixed" (FLOAT_INPUT_LINEARS float), "int8", "float"
    lm_head_bits: int | None = None  # None: a GGUF's exact table as stored, else LM_HEAD_BITS on CPU; 4 or 8: those
    query_seqlens: bool = True  # the batching input; False for onnxruntime < 1.32 (one sequence per call)
    lora_targets: tuple[str, ...] = ()  # linears that carry per-row LoRA inputs (contract.LORA_TARGETS); () none

    def __post_init__(self):
        if (self.precision, self.target) not in IO_DTYPE:
            pairs = ", ".join(f"{p.value}/{e.value}" for p, e in IO_DTYPE)
            raise SourceError(f"precision {self.precision.value} is not supported on target "
                              f"{self.target.value} (supported: {pairs})")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise SourceError(f"block size must be a power of two >= 16, got {self.block_size}")
        if self.quantizer not in QUANTIZERS:
            raise SourceError(f"quantizer must be one of {', '.join(QUANTIZERS)}, got {self.quantizer!r}")
        if self.offsets and self.quantizer == "rtn":
            raise SourceError("float offsets need the search quantizer (--quantizer search)")
        if self.activations not in ACTIVATIONS:
            raise SourceError(f"activations must be one of {', '.join(ACTIVATIONS)}, got {self.activations!r}")
        if self.lm_head_bits not in (None, 4, 8):
            raise SourceError(f"lm_head bits must be 4 or 8, got {self.lm_head_bits}")
        unknown = [t for t in self.lora_targets if t not in LORA_TARGETS]
        if unknown:
            raise SourceError(f"LoRA targets must be among {', '.join(LORA_TARGETS)}, got {unknown[0]!r}")
        # one order whatever order they were given in: the folder name and the graph do not depend on it
        object.__setattr__(self, "lora_targets", tuple(t for t in LORA_TARGETS if t in self.lora_targets))

    @property
    def grid(self) -> str:
        """The quantization grid of float weights: "symmetric", "zero_points" or "offsets" (scale_search.py)."""
        offsets = self.offsets
        if offsets is None:
            offsets = (self.quantizer == "search" and self.symmetric and self.target is BuildTarget.CPU
                       and self.precision is Precision.INT4)
        return "offsets" if offsets else "symmetric" if self.symmetric else "zero_points"

    @property
    def tag(self) -> str:
        """A folder-name suffix that tells builds with different options apart (the quantization recipe's
        version too: a cached default build from an older recipe is not reused)."""
        tag = f"{self.precision.value}-{self.target.value}" + ("" if self.query_seqlens else "-single")
        if self.bits:
            tag += f"-{'requant' if self.requantize else 'exact'}-{self.quantizer}-{self.activations}-r{RECIPE}"
        if self.lora_targets:
            tag += "-lora-" + "".join(t[0] if t in "qkvo" else t[:2] for t in self.lora_targets)
        return tag

    @property
    def io_dtype(self) -> type:
        return IO_DTYPE[(self.precision, self.target)]

    @property
    def bits(self) -> int | None:
        """Weight bits for MatMulNBits, None for float weights."""
        return WEIGHT_BITS.get(self.precision)

    @property
    def head_bits(self) -> int | None:
        """Bits of a quantized lm_head / tied embedding table (an exact GGUF import may keep its own instead)."""
        if not self.bits:
            return None
        if self.lm_head_bits:
            return self.lm_head_bits
        return max(self.bits, LM_HEAD_BITS) if self.target is BuildTarget.CPU else self.bits

    def accuracy_level(self, linear: str, bits: int) -> int:
        """MatMulNBits' accuracy_level for the `bits`-bit linear named `linear` (its node path,
        "/model/layers.0/attn/qkv_proj"): 4 (int8 activations, int8 dot kernels) on CPU unless `activations` asks
        for float ones there; "mixed" floats only 4-bit weights (8-bit ones have no fast float kernel: onnxruntime
        dequantizes them on every call); GPUs run their own kernels (0)."""
        if self.target is not BuildTarget.CPU or self.activations == "float":
            return 0
        if self.activations == "mixed" and bits == 4 and any(f"/{kind}" in linear for kind in FLOAT_INPUT_LINEARS):
            return 0
        return 4

    def accuracy_levels(self) -> dict[str, int]:
        """accuracy_level per kind of linear at the build's bits, for the manifest."""
        kinds = ("qkv_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
        levels = {k: self.accuracy_level(f"/{k}", self.bits) for k in kinds}
        return {**levels, "lm_head": self.accuracy_level("/lm_head", self.head_bits)}
