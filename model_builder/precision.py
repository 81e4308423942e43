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
GENAI_PROVIDER = {BuildTarget.CPU: None, BuildTarget.CUDA: "cuda", BuildTarget.DML: "dml"}


@dataclass(frozen=True)
class BuildOptions:
    precision: Precision = Precision.INT4
    target: BuildTarget = BuildTarget.CPU
    block_size: int = 32
    symmetric: bool = True  # False: packed uint8 zero points
    lm_head_bits: int | None = None  # None: same as the weights; 8 keeps the lm_head at int8
    query_seqlens: bool = True  # the batching input; False for onnxruntime < 1.32 (one sequence per call)

    def __post_init__(self):
        if (self.precision, self.target) not in IO_DTYPE:
            pairs = ", ".join(f"{p.value}/{e.value}" for p, e in IO_DTYPE)
            raise SourceError(f"precision {self.precision.value} is not supported on target "
                              f"{self.target.value} (supported: {pairs})")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise SourceError(f"block size must be a power of two >= 16, got {self.block_size}")
        if self.lm_head_bits not in (None, 4, 8):
            raise SourceError(f"lm_head bits must be 4 or 8, got {self.lm_head_bits}")

    @property
    def tag(self) -> str:
        """A folder-name suffix that tells builds with different options apart."""
        return f"{self.precision.value}-{self.target.value}" + ("" if self.query_seqlens else "-single")

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
        # int8 activations with int8 dot kernels on CPU; GPUs run their own kernels.
        return 4 if self.target is BuildTarget.CPU else 0
