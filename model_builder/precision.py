"""Precisions, execution providers and which pairs the builder supports: capability data, not branches."""
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


class Provider(str, Enum):
    CPU = "cpu"
    CUDA = "cuda"
    DML = "dml"


# (precision, provider) -> activation / KV-cache dtype of the graph.
IO_DTYPE: dict[tuple[Precision, Provider], type] = {
    (Precision.FP32, Provider.CPU): np.float32,
    (Precision.INT8, Provider.CPU): np.float32,
    (Precision.INT4, Provider.CPU): np.float32,
    (Precision.FP32, Provider.CUDA): np.float32,
    (Precision.FP16, Provider.CUDA): np.float16,
    (Precision.INT8, Provider.CUDA): np.float16,
    (Precision.INT4, Provider.CUDA): np.float16,
    (Precision.FP32, Provider.DML): np.float32,
    (Precision.FP16, Provider.DML): np.float16,
    (Precision.INT4, Provider.DML): np.float16,
}

WEIGHT_BITS = {Precision.INT8: 8, Precision.INT4: 4}
GENAI_PROVIDER = {Provider.CPU: None, Provider.CUDA: "cuda", Provider.DML: "dml"}


@dataclass(frozen=True)
class BuildOptions:
    precision: Precision = Precision.INT4
    provider: Provider = Provider.CPU
    block_size: int = 32
    symmetric: bool = True  # False: packed uint8 zero points
    lm_head_bits: int | None = None  # None: same as the weights; 8 keeps the lm_head at int8
    query_seqlens: bool = True  # the batching input; False for onnxruntime < 1.32 (one sequence per call)

    def __post_init__(self):
        if (self.precision, self.provider) not in IO_DTYPE:
            pairs = ", ".join(f"{p.value}/{e.value}" for p, e in IO_DTYPE)
            raise SourceError(f"precision {self.precision.value} is not supported on provider "
                              f"{self.provider.value} (supported: {pairs})")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise SourceError(f"block size must be a power of two >= 16, got {self.block_size}")
        if self.lm_head_bits not in (None, 4, 8):
            raise SourceError(f"lm_head bits must be 4 or 8, got {self.lm_head_bits}")

    @property
    def tag(self) -> str:
        """A folder-name suffix that tells builds with different options apart."""
        return f"{self.precision.value}-{self.provider.value}" + ("" if self.query_seqlens else "-single")

    @property
    def io_dtype(self) -> type:
        return IO_DTYPE[(self.precision, self.provider)]

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
        return 4 if self.provider is Provider.CPU else 0
