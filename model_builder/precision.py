"""Precisions, build targets (the execution provider a graph is built for) and which pairs the builder supports:
capability data, not branches. The runtime's `llm_runtime.providers.Provider` is the provider a session runs on."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

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
GENAI_PROVIDER = {BuildTarget.CPU: None, BuildTarget.CUDA: "cuda", BuildTarget.DML: "dml"}


@dataclass(frozen=True)
class BuildOptions:
    precision: Precision = Precision.INT4
    target: BuildTarget = BuildTarget.CPU
    block_size: int = 32
    symmetric: bool = True  # False: packed uint8 zero points
    offsets: bool = False  # float per-block offsets (value = q * scale + offset, Q4_1-like), beside MatMulNBits
    quantizer: str = "rtn"  # float weights -> blocks: "rtn" (round-to-nearest) or "search" (scale_search.py)
    gguf_exact: bool = False  # True: GGUF blocks with an exact MatMulNBits encoding keep their own format
    float_activations: bool = False  # MatMulNBits at accuracy_level 0 on CPU: exact float products, ~10x slower
    lm_head_bits: int | None = None  # None: as the weights (a GGUF's exact table as stored); 4 or 8: those bits
    query_seqlens: bool = True  # the batching input; False for onnxruntime < 1.32 (one sequence per call)

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
        if self.lm_head_bits not in (None, 4, 8):
            raise SourceError(f"lm_head bits must be 4 or 8, got {self.lm_head_bits}")

    @property
    def grid(self) -> str:
        """The quantization grid of float weights: "symmetric", "zero_points" or "offsets" (scale_search.py)."""
        return "offsets" if self.offsets else "symmetric" if self.symmetric else "zero_points"

    @property
    def tag(self) -> str:
        """A folder-name suffix that tells builds with different options apart (the quantization recipe's
        version too: a cached default build from an older recipe is not reused)."""
        tag = f"{self.precision.value}-{self.target.value}" + ("" if self.query_seqlens else "-single")
        if self.bits:
            tag += f"-{'exact' if self.gguf_exact else 'requant'}-{self.quantizer}"
            tag += "-float-act" if self.float_activations else ""
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
        return self.lm_head_bits if self.bits and self.lm_head_bits else self.bits

    @property
    def accuracy_level(self) -> int:
        # int8 activations with int8 dot kernels on CPU (unless asked for float ones); GPUs run their own kernels.
        return 4 if self.target is BuildTarget.CPU and not self.float_activations else 0
