"""Blockwise weight quantization for MatMulNBits and GatherBlockQuantized: pure numpy functions.

Layout (MatMulNBits input B): a weight W [N, K] (Hugging Face Linear orientation) is cut into blocks of
`block_size` along K, the last block zero-padded. Each block has one float scale and one integer zero point,
and dequantizes as (q - zero_point) * scale. Codes are packed along K, two 4-bit codes per byte with the even
element in the low nibble. Without explicit zero points the implied zero point is 2^(bits-1).

The rules follow onnxruntime's own quantizer (MLAS `BlockwiseQuantizer`, used by
`onnxruntime.quantization.matmul_nbits_quantizer`) bit for bit:
- symmetric: scale = m / -2^(bits-1), where m is the block's value of largest magnitude, sign kept (ties go to
  the negative one). m lands exactly on code 0, so all 2^bits codes are used; the opposite sign reaches only
  (2^(bits-1) - 1) * |scale| and clips beyond it. Same rule as ggml's Q4_0, so a block already on such a grid
  (multiples of s whose largest-magnitude member is -2^(bits-1) * s) round-trips exactly.
- asymmetric: the range [min, max] widened to include 0, scale = (max - min) / (2^bits - 1),
  zero point = round(-min / scale).
- codes: clip(round_half_away(w * (1 / scale) + zero_point), 0, 2^bits - 1); a zero scale gives code = zero point.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BlockQuant:
    """A weight [N, K] quantized blockwise along K, in MatMulNBits layout."""

    q: np.ndarray  # uint8 [N, k_blocks, block_size * bits // 8]
    scales: np.ndarray  # float32 [N, k_blocks]
    zero_points: np.ndarray | None  # uint8 packed [N, ceil(k_blocks * bits / 8)]; None: implied 2^(bits-1)
    bits: int
    block_size: int
    shape: tuple[int, int]  # (N, K)
    offsets: np.ndarray | None = None  # float32 [N, k_blocks]: value = (q - zero_point) * scale + offset


def _round_half_away(t: np.ndarray) -> np.ndarray:
    """C's roundf for t >= -0.5 (all codes here are): np.rint rounds ties to even, so lift the ties it lowered."""
    r = np.rint(t)
    r += (t - r) == 0.5
    return r


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """uint8 codes [..., M] (M even for 4 bits) -> bytes [..., M * bits // 8], low nibble = even element."""
    if bits == 8:
        return codes.astype(np.uint8)
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)


def unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    """The inverse of `pack`: bytes [..., B] -> uint8 codes [..., B * 8 // bits]."""
    if bits == 8:
        return packed
    out = np.empty(packed.shape[:-1] + (packed.shape[-1] * 2,), np.uint8)
    out[..., 0::2] = packed & 0x0F
    out[..., 1::2] = packed >> 4
    return out


def pack_zero_points(zp: np.ndarray, bits: int) -> np.ndarray:
    """uint8 zero points [N, k_blocks] -> packed [N, ceil(k_blocks * bits / 8)]; a spare nibble holds 8 (as MLAS)."""
    if bits == 4 and zp.shape[1] % 2:
        zp = np.concatenate([zp, np.full((zp.shape[0], 1), 8, np.uint8)], axis=1)
    return pack(zp, bits)


def _check(bits: int, block_size: int) -> None:
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two >= 16, got {block_size}")


def quantize_blockwise(w: np.ndarray, bits: int, block_size: int, symmetric: bool = True) -> BlockQuant:
    """Quantize w [N, K] along K into MatMulNBits blocks (rules in the module docstring)."""
    _check(bits, block_size)
    n, k = w.shape
    k_blocks = -(-k // block_size)
    w = np.asarray(w, dtype=np.float32)
    if k_blocks * block_size != k:
        w = np.pad(w, ((0, 0), (0, k_blocks * block_size - k)))
    blocks = w.reshape(n, k_blocks, block_size)  # [N, k_blocks, block]
    hi, lo = blocks.max(axis=-1), blocks.min(axis=-1)  # [N, k_blocks]
    top = np.float32(2 ** bits - 1)
    if symmetric:
        m = np.where(np.abs(hi) > np.abs(lo), hi, lo)
        scales = m / np.float32(-(2 ** (bits - 1)))
        zp = np.full((n, k_blocks), 2 ** (bits - 1), np.uint8)
    else:
        lo, hi = np.minimum(lo, 0), np.maximum(hi, 0)
        scales = (hi - lo) / top
        with np.errstate(divide="ignore", invalid="ignore"):
            zp_f = np.where(scales != 0, -lo / scales, 0)
        zp = np.clip(_round_half_away(zp_f), 0, top).astype(np.uint8)
    with np.errstate(divide="ignore"):
        recip = np.where(scales != 0, np.float32(1) / scales, np.float32(0)).astype(np.float32)
    t = blocks * recip[..., None]
    t += zp[..., None].astype(np.float32)
    codes = np.clip(_round_half_away(t), 0, top, out=t).astype(np.uint8)  # [N, k_blocks, block]
    return BlockQuant(q=pack(codes, bits), scales=scales.astype(np.float32),
                      zero_points=None if symmetric else pack_zero_points(zp, bits),
                      bits=bits, block_size=block_size, shape=(n, k))


def zero_points_of(bq: BlockQuant) -> np.ndarray:
    """uint8 [N, k_blocks]: each block's zero point, explicit or implied."""
    n, k_blocks = bq.scales.shape
    if bq.zero_points is None:
        return np.full((n, k_blocks), 2 ** (bq.bits - 1), np.uint8)
    return unpack(bq.zero_points, bq.bits)[:, :k_blocks]


def dequantize_blockwise(bq: BlockQuant) -> np.ndarray:
    """float32 [N, K] = (q - zero_point) * scale (+ offset): the reference for what the onnxruntime ops compute."""
    n, k = bq.shape
    codes = unpack(bq.q, bq.bits).astype(np.float32)  # [N, k_blocks, block]
    codes -= zero_points_of(bq)[..., None]
    codes *= bq.scales[..., None]
    if bq.offsets is not None:
        codes += bq.offsets[..., None]
    return codes.reshape(n, -1)[:, :k]


def centered(codes: np.ndarray, scales: np.ndarray, offsets: np.ndarray, bits: int,
             exact: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-block zero points near the codes' mean, and the offsets that keep every value: (q - z) * s + (o + z * s)
    = q * s + o. codes [N, kb, block] in [0, 2^bits); scales, offsets float32 [N, kb] -> (zero points uint8 [N, kb],
    offsets float32 [N, kb]).

    Why: MatMulNBits' int8-activation kernels round x per block, and that error meets only (q - z) * s; the offset
    term sums float x. With z = 0 (value q * s + o, as Q4_1 and K-quant files store it) the error meets all of
    q * s, about twice the centered codes' size. With `exact`, a block keeps z = 0 where o + z * s is not exact
    in fp32, so the values stay bit for bit; without, the new offset is rounded to fp32."""
    z = np.clip(np.rint(codes.mean(axis=-1)), 0, 2 ** bits - 1)
    moved = offsets.astype(np.float64) + z * scales.astype(np.float64)  # exact: two fp32 products of small codes
    ok = moved.astype(np.float32) == moved if exact else np.ones(moved.shape, bool)
    return np.where(ok, z, 0).astype(np.uint8), np.where(ok, moved, offsets).astype(np.float32)


def stack_rows(parts: list[BlockQuant]) -> BlockQuant:
    """BlockQuants of one K, bits and block size -> one with their rows stacked (packed Q/K/V); zero points and
    offsets become explicit when some part has them."""
    first = parts[0]
    if len(parts) == 1:
        return first
    if len({(p.bits, p.block_size, p.shape[1]) for p in parts}) != 1:
        raise ValueError("stacked blocks need one K, bits and block size")
    zp = None
    if any(p.zero_points is not None for p in parts):
        zp = pack_zero_points(np.concatenate([zero_points_of(p) for p in parts]), first.bits)
    offsets = None
    if any(p.offsets is not None for p in parts):
        offsets = np.concatenate([p.offsets if p.offsets is not None else np.zeros_like(p.scales) for p in parts])
    return BlockQuant(q=np.concatenate([p.q for p in parts]), scales=np.concatenate([p.scales for p in parts]),
                      zero_points=zp, bits=first.bits, block_size=first.block_size,
                      shape=(sum(p.shape[0] for p in parts), first.shape[1]), offsets=offsets)


def gather_block_quantized_inputs(bq: BlockQuant) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(data, scales, zero_points) for com.microsoft GatherBlockQuantized reading rows of bq's matrix.

    Use with gather_axis=0, quantize_axis=1, bits=bq.bits, block_size=bq.block_size; output [..., K] equals
    `dequantize_blockwise(bq)[indices]` bit for bit.
    - data: uint8 [N, K * bits / 8], the codes packed as in MatMulNBits (low nibble first) but not padded per
      block, so the output is exactly K wide. A view of bq.q when K is a multiple of block_size.
    - scales: float32 [N, k_blocks], as MatMulNBits.
    - zero_points: None or uint8 packed [N, ceil(k_blocks * bits / 8)], as MatMulNBits. For uint8 data the
      kernel's default zero point is 2^(bits-1), the MatMulNBits one, so symmetric weights pass none
      (as onnxruntime-genai does). int4/uint4 data would default to 0 instead, which is why uint8 is used.
    """
    n, k = bq.shape
    if (k * bq.bits) % 8:
        raise ValueError(f"GatherBlockQuantized needs K * bits divisible by 8, got K={k}, bits={bq.bits}")
    data = bq.q.reshape(n, -1)[:, : k * bq.bits // 8]
    return np.ascontiguousarray(data), bq.scales, bq.zero_points
