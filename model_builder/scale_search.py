"""A better blockwise quantizer than round-to-nearest: per block, search the scale (and zero point or offset)
that minimises the weighted squared error, calibration-free, vectorised in numpy.

The idea is llama.cpp's `make_qx_quants` / `make_qkx2_quants` (ggml-quants.c), re-derived here: for each of a
few candidate inverse scales around the min/max one, round the block onto the grid, then solve the weighted
least squares for the best scale (and offset) of those codes in closed form, and keep the candidate whose error
is smallest. The weights are llama.cpp's no-imatrix choice, w = rms(block) + |x|: large values matter more.

Three grids, as MatMulNBits can hold them:
- symmetric: value = (q - 2^(b-1)) * s (no zero points, the fastest kernel path);
- zero points: value = (q - z) * s with an integer z per block (packed uint8, as fast);
- offsets: value = q * s + m with a float m per block (Q4_1-like; the layer adds the offset term beside
  MatMulNBits, see linear.py), stored as (q - z) * s + (m + z * s) with z near the codes' mean
  (`quantize.centered`).
"""
from __future__ import annotations

import numpy as np

from .quantize import BlockQuant, _check, centered, pack, pack_zero_points

CHUNK_ELEMENTS = 1 << 16  # rows are searched in chunks of about this many weights: temporaries stay in cache
# candidate inverse scales (levels + step) / range; step 0 is round-to-nearest's grid
STEPS = np.float32([-0.5, -0.25, 0.0, 0.25, 0.5, 1.0])


def _weights(x: np.ndarray) -> np.ndarray:
    """Importance of each element [.., block]: rms of its block + |x|."""
    return np.sqrt(np.mean(x * x, axis=-1, keepdims=True)) + np.abs(x)


def _dot(a: np.ndarray, b: np.ndarray, dtype) -> np.ndarray:
    """Sum over the block of a * b: [R, kb, block] twice -> [R, kb]. 8-bit errors are a small difference of
    large sums (about 1e-5 of them), so those sums are kept in float64."""
    return np.einsum("rbk,rbk->rb", a, b, dtype=dtype)


def _search(x: np.ndarray, w: np.ndarray, bits: int, grid: str):
    """x, w [R, kb, block] -> (best inverse scale [R, kb, 1], zero point or lower end [R, kb, 1]): the candidate
    whose least-squares refit leaves the smallest weighted error; see `_codes` for the grids."""
    acc = np.float64 if bits == 8 else np.float32
    top, half = 2 ** bits - 1, 2 ** (bits - 1)
    lo, hi = x.min(-1, keepdims=True), x.max(-1, keepdims=True)
    if grid == "symmetric":
        amax = np.where(np.abs(hi) > np.abs(lo), hi, lo)  # signed: it lands on code 0, as round-to-nearest
        span, levels = -amax, np.float32(half)
    else:
        lo = np.minimum(lo, 0)
        span, levels = (np.maximum(hi, 0) if grid == "zero_points" else hi) - lo, np.float32(top)
    wx = w * x
    sw, swx = w.sum(-1, dtype=acc), wx.sum(-1, dtype=acc)
    best = np.full(x.shape[:-1], -np.inf, acc)  # the score: weighted error = sum(w x^2) - score
    best_inv = np.zeros(x.shape[:-1] + (1,), np.float32)
    l = np.empty_like(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        for step in STEPS:
            inv = np.where(span != 0, (levels + step) / span, 0).astype(np.float32)
            _codes(x, inv, lo, bits, grid, out=l)
            sxl, sll = _dot(wx, l, acc), _dot(w * l, l, acc)
            if grid == "offsets":  # fit s and m: the score is the explained part of the weighted sum of squares
                sl = _dot(w, l, acc)
                det = sw * sll - sl * sl
                score = np.where(det > 0, (sw * sxl * sxl - 2 * sl * sxl * swx + sll * swx * swx) / det, 0)
            else:
                score = np.where(sll > 0, sxl * sxl / sll, 0)
            better = score > best
            best = np.where(better, score, best)
            best_inv = np.where(better[..., None], inv, best_inv)
    return best_inv, lo


def _codes(x, inv, lo, bits: int, grid: str, out: np.ndarray) -> np.ndarray:
    """The codes of x at inverse scale inv, minus the grid's zero (what the refit multiplies by the scale):
    symmetric q - 2^(b-1) in [-2^(b-1), 2^(b-1) - 1]; zero points q - z with z = round(-lo * inv); offsets
    q = round((x - lo) inv) in [0, 2^b - 1]."""
    top, half = 2 ** bits - 1, 2 ** (bits - 1)
    if grid == "offsets":
        np.multiply(x - lo, inv, out=out)
        return np.clip(np.rint(out, out=out), 0, top, out=out)
    np.multiply(x, inv, out=out)
    np.rint(out, out=out)
    if grid == "symmetric":
        return np.clip(out, -half, half - 1, out=out)
    z = np.clip(np.rint(-lo * inv), 0, top)
    out += z
    np.clip(out, 0, top, out=out)
    out -= z
    return out


def _fit(x: np.ndarray, w: np.ndarray, l: np.ndarray, grid: str):
    """Weighted least squares for the chosen codes: scale [R, kb] (and offset m <= 0, llama.cpp's rule: the
    block's minimum or 0, for the offsets grid)."""
    sxl, sll = _dot(w * x, l, np.float64), _dot(w * l, l, np.float64)
    if grid != "offsets":
        return np.where(sll > 0, sxl / np.where(sll > 0, sll, 1), 0), None
    sw, swx, sl = w.sum(-1, dtype=np.float64), (w * x).sum(-1, dtype=np.float64), _dot(w, l, np.float64)
    det = sw * sll - sl * sl
    ok = det > 0
    d = np.where(ok, det, 1)
    s, m = np.where(ok, (sw * sxl - sl * swx) / d, 0), np.where(ok, (sll * swx - sl * sxl) / d, x.min(-1))
    pos = m > 0  # an offset above 0 would leave 0 off the grid: refit the scale alone with m = 0
    return np.where(pos, np.where(sll > 0, sxl / np.where(sll > 0, sll, 1), 0), s), np.where(pos, 0, m)


def quantize_searched(w: np.ndarray, bits: int, block_size: int, grid: str = "symmetric") -> BlockQuant:
    """Quantize w [N, K] along K into MatMulNBits blocks, searching each block's scale; grid is "symmetric",
    "zero_points" or "offsets" (module docstring). Same layout as `quantize.quantize_blockwise`."""
    _check(bits, block_size)
    if grid not in ("symmetric", "zero_points", "offsets"):
        raise ValueError(f"grid must be symmetric, zero_points or offsets, got {grid!r}")
    n, k = w.shape
    kb = -(-k // block_size)
    codes = np.empty((n, kb, block_size), np.uint8)
    scales = np.empty((n, kb), np.float32)
    extra = np.empty((n, kb), np.uint8 if grid == "zero_points" else np.float32)
    rows = max(1, CHUNK_ELEMENTS // (kb * block_size))
    for r in range(0, n, rows):
        x = np.asarray(w[r:r + rows], np.float32)
        if kb * block_size != k:
            x = np.pad(x, ((0, 0), (0, kb * block_size - k)))
        x = x.reshape(len(x), kb, block_size)  # [R, kb, block]
        imp = _weights(x)
        inv, lo = _search(x, imp, bits, grid)
        l = _codes(x, inv, lo, bits, grid, out=np.empty_like(x))
        s, m = _fit(x, imp, l, grid)
        scales[r:r + rows] = s
        if grid == "symmetric":
            codes[r:r + rows] = l + 2 ** (bits - 1)
        elif grid == "zero_points":
            z = np.clip(np.rint(-lo * inv), 0, 2 ** bits - 1)
            codes[r:r + rows], extra[r:r + rows] = l + z, z[..., 0]
        else:
            codes[r:r + rows], extra[r:r + rows] = l, m
    if grid == "offsets":
        z, offsets = centered(codes, scales, extra, bits, exact=False)
        return BlockQuant(pack(codes, bits), scales, pack_zero_points(z, bits), bits, block_size, (n, k), offsets)
    zp = pack_zero_points(extra, bits) if grid == "zero_points" else None
    return BlockQuant(pack(codes, bits), scales, zp, bits, block_size, (n, k))
