"""GGUF block formats onto MatMulNBits blocks without re-rounding: each converter reads a tensor's raw blocks and
returns the same numbers as a `BlockQuant`, (q - zero_point) * scale + offset, bit for bit equal to
`gguf.quants.dequantize` (every scale and offset below is a product of an fp16 and a small integer, exact in fp32;
the one rounding, scale * code + offset, is the one gguf's dequantizer makes too). A format with an offset gets
per-block zero points z near its codes' mean and the offset o + z * scale (`quantize.centered`): the same values,
and the int8 activations of MatMulNBits' fast CPU kernels meet only the centered codes.

| GGUF | its value | MatMulNBits | code | scale | zero point | offset |
|---|---|---|---|---|---|---|
| Q4_0 | d (q - 8) | 4 bits, block 32 | q | d | implied 8 | - |
| Q4_1 | d q + m | 4 bits, block 32 | q | d | z (packed) | m + z d |
| Q5_0 | d (q - 16) | 8 bits, block 32 | q + 112 | d | implied 128 | - |
| Q5_1 | d q + m | 8 bits, block 32 | q + 128 | d | 128 + z (packed) | m + z d |
| Q8_0 | d q (int8) | 8 bits, block 32 | q + 128 | d | implied 128 | - |
| Q4_K | d sc q - dmin m (32-blocks) | 4 bits, block 32 | q | d sc | z (packed) | -dmin m + z d sc |
| Q5_K | d sc q - dmin m (32-blocks) | 8 bits, block 32 | q + 128 | d sc | 128 + z (packed) | -dmin m + z d sc |
| Q6_K | d sc (q - 32) (16-blocks) | 8 bits, block 16 | q + 96 | d sc | implied 128 | - |

MatMulNBits has no per-block float offset of its own (its float zero points are exact but take a CPU fallback
about 100x slower, and 8-bit float zero points are refused), so an offset is carried beside it: the layer adds
`blocksums(x) @ offsets.T` (see `linear.py`). Other types (Q2_K, Q3_K, IQ*) have no such encoding and are
re-quantized.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .quantize import BlockQuant, centered, pack, pack_zero_points

QK, QK_K = 32, 256  # elements per block of the 32-formats and per super-block of the K-quants


def _f16(raw: np.ndarray) -> np.ndarray:
    """uint8 [..., 2] -> float32 [...]."""
    return np.ascontiguousarray(raw).view(np.float16)[..., 0].astype(np.float32)


def _blocks(raw: np.ndarray, shape: tuple[int, int], block: int, nbytes: int) -> np.ndarray:
    """raw uint8 [N, K / block * nbytes] -> [N, K / block, nbytes]."""
    n, k = shape
    if k % block:
        raise ValueError(f"GGUF rows must be whole blocks of {block}, got K={k}")
    return np.ascontiguousarray(raw, dtype=np.uint8).reshape(n, k // block, nbytes)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """[..., 16] bytes -> [..., 32] codes: low nibbles are elements 0-15, high nibbles 16-31."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _high_bits(qh: np.ndarray) -> np.ndarray:
    """Q5_0/Q5_1 qh [..., 4] (one little-endian uint32) -> [..., 32]: bit j is element j's fifth bit."""
    return np.unpackbits(qh, axis=-1, bitorder="little")


def _result(codes, scales, offsets, bits: int, block: int, shape) -> BlockQuant:
    """codes uint8 [N, kb, block]: value (code - 2^(bits-1)) * scale, or with offsets (float32 [N, kb]) the file's
    q * scale + offset, q = code (4 bits) or code - 128 (8 bits), which gets explicit zero points (`centered`)."""
    zp = None
    if offsets is not None:
        native = codes.astype(np.int16) - (0 if bits == 4 else 128)  # the file's codes, value q * scale + offset
        z, offsets = centered(native, scales, offsets, bits)
        zp = pack_zero_points(z + np.uint8(0 if bits == 4 else 128), bits)
    return BlockQuant(q=pack(codes.astype(np.uint8), bits), scales=scales.astype(np.float32), zero_points=zp,
                      bits=bits, block_size=block, shape=tuple(shape), offsets=offsets)


def q4_0(raw: np.ndarray, shape: tuple[int, int]) -> BlockQuant:
    b = _blocks(raw, shape, QK, 18)  # d f16, qs[16]
    return _result(_nibbles(b[..., 2:]), _f16(b[..., :2]), None, 4, QK, shape)


def q4_1(raw: np.ndarray, shape: tuple[int, int]) -> BlockQuant:
    b = _blocks(raw, shape, QK, 20)  # d f16, m f16, qs[16]
    return _result(_nibbles(b[..., 4:]), _f16(b[..., :2]), _f16(b[..., 2:4]), 4, QK, shape)


def q5_0(raw: np.ndarray, shape: tuple[int, int]) -> BlockQuant:
    b = _blocks(raw, shape, QK, 22)  # d f16, qh[4], qs[16]
    q = _nibbles(b[..., 6:]) | (_high_bits(b[..., 2:6]) << 4)
    return _result(q + np.uint8(112), _f16(b[..., :2]), None, 8, QK, shape)


def q5_1(raw: np.ndarray, shape: tuple[int, int]) -> BlockQuant:
    b = _blocks(raw, shape, QK, 24)  # d f16, m f16, qh[4], qs[16]
    q = _nibbles(b[..., 8:]) | (_high_bits(b[..., 4:8]) << 4)
    return _result(q + np.uint8(128), _f16(b[..., :2]), _f16(b[..., 2:4]), 8, QK, shape)


def q8_0(raw: np.ndarray, shape: tuple[int, int]) -> BlockQuant:
    b = _blocks(raw, shape, QK, 34)  # d f16, int8 qs[32]; flipping the sign bit adds 128
    return _result(b[..., 2:] ^ np.uint8(0x80), _f16(b[..., :2]), None, 8, QK, shape)


def _k_scales(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K packed 6-bit scales [..., 12] -> (sc, m) uint8 [..., 8]: bytes 0-3 hold sc 0-3 (and the top
    bits of sc 4-7), bytes 4-7 m 0-3 (and the top bits of m 4-7), bytes 8-11 the low nibbles of sc/m 4-7."""
    d, m, low = scales[..., 0:4], scales[..., 4:8], scales[..., 8:12]
    sc = np.concatenate([d & 0x3F, (low & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mn = np.concatenate([m & 0x3F, (low >> 4) | ((m >> 2) & 0x30)], axis=-1)
    return sc, mn


def _k_scale_offset(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A Q4_K/Q5_K super-block's (scale, offset) per 32-block: (d * sc, -dmin * m), float32 [N, K/32]."""
    n = b.shape[0]
    sc, mn = _k_scales(b[..., 4:16])
    d, dmin = _f16(b[..., 0:2])[..., None], _f16(b[..., 2:4])[..., None]
    return (d * sc).reshape(n, -1), -(dmin * mn).reshape(n, -1)


def _k_nibbles(qs: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K qs [N, nb, 128] -> low 4 bits [N, nb * 8, 32]: each 32 bytes hold two 32-blocks, low nibble first."""
    n, nb = qs.shape[:2]
    qs = qs.reshape(n, nb, 4, 1, 32)
    return np.concatenate([qs & 0x0F, qs >> 4], axis=3).reshape(n, nb * 8, 32)


def q4_k(raw: np.ndarray, shape: tuple[int, int]) -> BlockQuant:
    b = _blocks(raw, shape, QK_K, 144)  # d, dmin f16, scales[12], qs[128]
    scales, offsets = _k_scale_offset(b)
    return _result(_k_nibbles(b[..., 16:]), scales, offsets, 4, QK, shape)


def q5_k(raw: np.ndarray, shape: tuple[int, int]) -> BlockQuant:
    b = _blocks(raw, shape, QK_K, 176)  # d, dmin f16, scales[12], qh[32], qs[128]
    n, nb = b.shape[:2]
    scales, offsets = _k_scale_offset(b)
    qh = b[..., 16:48].reshape(n, nb, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 1, 8, 1)  # bit j: block j
    q = _k_nibbles(b[..., 48:]) | ((qh & 1).reshape(n, nb * 8, 32) << 4)
    return _result(q + np.uint8(128), scales, offsets, 8, QK, shape)


def q6_k(raw: np.ndarray, shape: tuple[int, int]) -> BlockQuant:
    """ql[128] low 4 bits, qh[64] high 2 bits, int8 scales[16] (one per 16 elements), d f16. Each half of 128
    elements uses 64 ql bytes (low nibbles: elements 0-63, high: 64-127) and 32 qh bytes (bit pairs 0-3 for the
    four 32-element quarters)."""
    b = _blocks(raw, shape, QK_K, 210)
    n, nb = b.shape[:2]
    ql = b[..., :128].reshape(n, nb, 2, 1, 64)
    low = np.concatenate([ql & 0x0F, ql >> 4], axis=3).reshape(n, nb, 2, 4, 32)
    qh = b[..., 128:192].reshape(n, nb, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 1, 4, 1)
    q = low | ((qh & 3) << 4)  # [N, nb, 2, 4, 32]: element order
    sc = b[..., 192:208].view(np.int8).astype(np.float32)  # [N, nb, 16]
    scales = (_f16(b[..., 208:210])[..., None] * sc).reshape(n, -1)
    return _result(q.reshape(n, -1, 16) + np.uint8(96), scales, None, 8, 16, shape)


# GGUF type name -> (converter, MatMulNBits bits it produces)
CONVERTERS: dict[str, tuple[Callable[[np.ndarray, tuple[int, int]], BlockQuant], int]] = {
    "Q4_0": (q4_0, 4), "Q4_1": (q4_1, 4), "Q4_K": (q4_k, 4),
    "Q5_0": (q5_0, 8), "Q5_1": (q5_1, 8), "Q5_K": (q5_k, 8), "Q6_K": (q6_k, 8), "Q8_0": (q8_0, 8),
}
NATIVE_BITS = {"Q4_0": 4, "Q4_1": 4, "Q4_K": 4, "Q5_0": 5, "Q5_1": 5, "Q5_K": 5, "Q6_K": 6, "Q8_0": 8}


def convert(kind: str, raw: np.ndarray, shape: tuple[int, int]) -> BlockQuant:
    """The raw blocks of a GGUF [out, in] matrix of type `kind` (a key of CONVERTERS) as MatMulNBits blocks."""
    return CONVERTERS[kind][0](raw, shape)
