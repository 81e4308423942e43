"""A better blockwise quantizer than round-to-nearest: per block, search the scale (and zero point or offset)
that minimises the weighted squared error, calibration-free, vectorised in numpy.

The idea is llama.cpp's `make_qx_quants` / `make_qkx2_quants` (ggml-quants.c), re-derived here: for each of a
few candidate inverse scales around the min/max one, round the block onto the grid, then solve the weighted
least squares for the best scale (and offset) of those codes in closed form, and keep the candidate whose error
is smallest; then round once more onto the winner's fitted grid and keep that if it is better still (one step of
alternating rounding and refitting, which cannot raise the error the codes are fitted for). The weights are
llama.cpp's no-imatrix choice, w = rms(block) + |x|: large values matter more.

Three grids, as MatMulNBits can hold them:
- symmetric: value = (q - 2^(b-1)) * s (no zero points, the fastest kernel path);
- zero points: value = (q - z) * s with an integer z per block (packed uint8, as fast);
- offsets: value = q * s + m with a float m per block (Q4_1-like; the layer adds the offset term beside
  MatMulNBits, see linear.py), stored as (q - z) * s + (m + z * s) with z near the codes' mean
  (`quantize.centered`).

Speed: rows go in chunks of about CHUNK_ELEMENTS weights, each transposed to [block, blocks] so that a block's
sums, minimum and maximum are reductions over the first axis (numpy vectorises those across blocks; over a last
axis of 32 it loops per block); every pass writes into a chunk-sized buffer (`out=`); the fit reuses the winning
candidate's sums; chunks run on a small thread pool (numpy's loops release the GIL), each writing its own rows
of the result, so memory stays one tensor's codes plus a few chunk-sized buffers per thread.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .quantize import BlockQuant, _check, pack, pack_zero_points

CHUNK_ELEMENTS = 1 << 16  # rows are searched in chunks of about this many weights: temporaries stay in cache
# candidate inverse scales (levels + step) / range; step 0 is round-to-nearest's grid. The old six steps ended at
# 1.0, which won 0.04% of the default model's offsets blocks and 0.8% of its symmetric ones: the offsets and
# zero-point grids drop it (the refit round more than makes up for it), the symmetric grid keeps it (without it
# the weighted error came out 0.04% above the old search's on the default model's tensors).
# Measured: benchmarks/results/2026-12-06-epyc-avx2.md.
_FIVE = np.float32([-0.5, -0.25, 0.0, 0.25, 0.5])
STEPS = {"offsets": _FIVE, "zero_points": _FIVE, "symmetric": np.append(_FIVE, np.float32(1.0))}
THREADS = min(4, os.cpu_count() or 1)
_pool: ThreadPoolExecutor | None = None


def _weights(x: np.ndarray) -> np.ndarray:
    """Importance of each element [.., block]: rms of its block + |x|."""
    return np.sqrt(np.mean(x * x, axis=-1, keepdims=True)) + np.abs(x)


class _Block:
    """A chunk of blocks, transposed: x [block, n], one column per block (sums over a block are reductions over
    axis 0, which numpy vectorises across columns; per-block values are [n]), with its importance w (as
    `_weights`), the sums that do not depend on the codes, and buffers that every candidate reuses."""

    def __init__(self, x: np.ndarray, bits: int, grid: str):
        self.x, self.bits, self.grid = x, bits, grid
        self.acc = np.float64 if bits == 8 else np.float32  # 8-bit errors are a small difference of large sums
        self.w = np.abs(x)
        self.w += np.sqrt(self._dot(x, x).astype(np.float32) / np.float32(len(x)))
        self.wx = self.w * x
        self.sw, self.swx = self._sum(self.w), self._sum(self.wx)
        self.l, self.wl = np.empty_like(x), np.empty_like(x)  # codes, w * codes
        self.xmin, self.xmax = x.min(0), x.max(0)
        self.lo = self.xs = None

    def _sum(self, a: np.ndarray) -> np.ndarray:
        return a.sum(0, dtype=self.acc)

    def _dot(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.einsum("kn,kn->n", a, b, dtype=self.acc)

    def codes(self, inv: np.ndarray, anchor: np.ndarray, clip: bool = True) -> np.ndarray:
        """The codes of x at inverse scale inv [n] minus the grid's zero (what the refit multiplies by the scale),
        into self.l: symmetric q - 2^(b-1) in [-2^(b-1), 2^(b-1) - 1]; zero points q - z with
        z = round(-anchor * inv); offsets q = round((x - anchor) inv) in [0, 2^b - 1] (clip=False: the caller knows
        that they are, an offsets candidate below 2^b - 0.5 levels)."""
        x, l, top, half = self.x, self.l, np.float32(2 ** self.bits - 1), np.float32(2 ** (self.bits - 1))
        if self.grid == "offsets":
            if anchor is self.lo:  # a candidate around the min/max grid: x - lo was computed once
                np.multiply(self.xs, inv, out=l)
            else:
                np.subtract(x, anchor, out=l)
                l *= inv
            np.rint(l, out=l)
            return np.clip(l, np.float32(0), top, out=l) if clip else l
        np.multiply(x, inv, out=l)
        np.rint(l, out=l)
        if self.grid == "symmetric":
            return np.clip(l, -half, half - 1, out=l)
        z = self.zero_points(inv, anchor)
        l += z
        np.clip(l, np.float32(0), top, out=l)
        l -= z
        return l

    def zero_points(self, inv: np.ndarray, anchor: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(-anchor * inv), 0, 2 ** self.bits - 1).astype(np.float32)

    def sums(self) -> tuple[np.ndarray, ...]:
        """(sum w x l, sum w l^2, sum w l) [n] of the codes in self.l (the last only for offsets)."""
        l = self.l
        np.multiply(self.w, l, out=self.wl)
        sxl, sll = self._dot(self.wx, l), self._dot(self.wl, l)
        return (sxl, sll, self._sum(self.wl)) if self.grid == "offsets" else (sxl, sll)

    def exact_sums(self) -> tuple[np.ndarray, ...]:
        """`sums` of the codes in self.l in float64, for the final fit (and sum w, sum w x into self.sw, self.swx):
        float32 sums put a block that round-to-nearest codes exactly about 1e-7 off its grid."""
        f64, l, w, wx = np.float64, self.l, self.w, self.wx
        sxl, sll = np.einsum("kn,kn->n", wx, l, dtype=f64), np.einsum("kn,kn,kn->n", w, l, l, dtype=f64)
        if self.grid != "offsets":
            return sxl, sll
        self.sw, self.swx = w.sum(0, dtype=f64), wx.sum(0, dtype=f64)
        return sxl, sll, np.einsum("kn,kn->n", w, l, dtype=f64)

    def score(self, sums: tuple[np.ndarray, ...]) -> np.ndarray:
        """[n]: how much of the weighted sum of squares the least-squares fit of the codes explains (their weighted
        error is sum(w x^2) minus this)."""
        sxl, sll = sums[:2]
        if self.grid != "offsets":
            return np.where(sll > 0, sxl * sxl / sll, 0)
        sl, sw, swx = sums[2], self.sw, self.swx
        det = sw * sll - sl * sl
        return np.where(det > 0, (sw * sxl * sxl - 2 * sl * sxl * swx + sll * swx * swx) / det, 0)

    def fit(self, sums: tuple[np.ndarray, ...]):
        """Weighted least squares for codes with these sums, in float64: scale [n] (and offset m <= 0, llama.cpp's
        rule: an offset above 0 would leave 0 off the grid, so such a block refits its scale alone with m = 0; a
        block of equal codes gets scale 0 and its minimum)."""
        sxl, sll = (a.astype(np.float64) for a in sums[:2])
        alone = np.where(sll > 0, sxl / np.where(sll > 0, sll, 1), 0)
        if self.grid != "offsets":
            return alone, None
        sl, sw, swx = (a.astype(np.float64) for a in (sums[2], self.sw, self.swx))
        det = sw * sll - sl * sl
        ok = det > 0
        d = np.where(ok, det, 1)
        s, m = np.where(ok, (sw * sxl - sl * swx) / d, 0), np.where(ok, (sll * swx - sl * sxl) / d, self.xmin)
        pos = m > 0
        return np.where(pos, alone, s), np.where(pos, 0, m)

    def search(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """(inverse scale, anchor) [n] of the best grid (module docstring) and its fitted (scale, offset or None)
        [n]; its codes are left in self.l."""
        x, bits, grid = self.x, self.bits, self.grid
        top, half = 2 ** bits - 1, 2 ** (bits - 1)
        lo, hi = self.xmin, self.xmax
        if grid == "symmetric":
            span, levels = -np.where(np.abs(hi) > np.abs(lo), hi, lo), np.float32(half)  # signed: lands on code 0
        else:
            lo = np.minimum(lo, 0)
            span, levels = (np.maximum(hi, 0) if grid == "zero_points" else hi) - lo, np.float32(top)
            if grid == "offsets":
                self.xs = x - lo
        self.lo = lo
        best = np.full(x.shape[1:], -np.inf, self.acc)
        best_inv = np.zeros(x.shape[1:], np.float32)
        best_sums = None
        with np.errstate(divide="ignore", invalid="ignore"):
            for step in STEPS[grid]:
                inv = np.where(span != 0, (levels + step) / span, 0).astype(np.float32)
                self.codes(inv, lo, clip=step >= 0.5)
                sums = self.sums()
                score = self.score(sums)
                better = score > best
                np.copyto(best, score, where=better)
                np.copyto(best_inv, inv, where=better)
                best_sums = sums if best_sums is None else [np.where(better, a, b) for a, b in zip(sums, best_sums)]
            # one more candidate: the winner's own fitted grid (round onto it, refit)
            s, m = self.fit(best_sums)
            inv = np.where(s != 0, 1 / np.where(s != 0, s, 1), 0).astype(np.float32)
            if grid == "offsets":
                anchor = m.astype(np.float32)
            elif grid == "zero_points":  # keep the winner's zero point z: an anchor of -z * s rounds back to it
                anchor = (-self.zero_points(best_inv, lo) / np.where(inv != 0, inv, 1)).astype(np.float32)
            else:
                anchor = lo
            self.codes(inv, anchor)
            sums = self.sums()
            better = self.score(sums) > best
        best_sums = [np.where(better, a, b) for a, b in zip(sums, best_sums)]
        if not better.all():
            np.copyto(inv, best_inv, where=~better)
            anchor = np.where(better, anchor, lo)
            self.codes(inv, anchor)
        return (inv, anchor, *self.fit(self.exact_sums()))


def _quantize_rows(w: np.ndarray, r: int, rows: int, bits: int, grid: str, kb: int, block_size: int,
                   codes: np.ndarray, scales: np.ndarray, zero_points: np.ndarray, offsets: np.ndarray) -> None:
    """Search rows r:r+rows of w and write their codes [R, kb, block], scales and zero points / offsets (offsets:
    the codes' mean, rounded, and the offset moved by it, as `quantize.centered`) in place."""
    n, k = w.shape
    x = np.asarray(w[r:r + rows], np.float32)
    if kb * block_size != k:
        x = np.pad(x, ((0, 0), (0, kb * block_size - k)))
    rr = len(x)
    blk = _Block(np.ascontiguousarray(x.reshape(rr * kb, block_size).T), bits, grid)  # [block, R * kb]
    inv, anchor, s, m = blk.search()
    s = s.astype(np.float32)
    scales[r:r + rows] = s.reshape(rr, kb)
    if grid == "symmetric":
        blk.l += 2 ** (bits - 1)
    elif grid == "zero_points":
        z = blk.zero_points(inv, anchor)
        blk.l += z
        zero_points[r:r + rows] = z.reshape(rr, kb)
    else:
        z = np.clip(np.rint(blk.l.sum(0) / np.float32(block_size)), 0, 2 ** bits - 1)
        moved = m.astype(np.float32).astype(np.float64) + z * s.astype(np.float64)
        zero_points[r:r + rows], offsets[r:r + rows] = z.reshape(rr, kb), moved.reshape(rr, kb)
    codes[r:r + rows] = blk.l.T.reshape(rr, kb, block_size)


def _map(fn, items: list) -> None:
    global _pool
    if THREADS <= 1 or len(items) <= 1:
        for i in items:
            fn(i)
        return
    if _pool is None:
        _pool = ThreadPoolExecutor(THREADS, thread_name_prefix="scale_search")
    for _ in _pool.map(fn, items):
        pass


def quantize_searched(w: np.ndarray, bits: int, block_size: int, grid: str = "symmetric") -> BlockQuant:
    """Quantize w [N, K] along K into MatMulNBits blocks, searching each block's scale; grid is "symmetric",
    "zero_points" or "offsets" (module docstring). Same layout as `quantize.quantize_blockwise`; offsets are
    stored around zero points near the codes' mean, as `quantize.centered(..., exact=False)` moves them."""
    _check(bits, block_size)
    if grid not in STEPS:
        raise ValueError(f"grid must be symmetric, zero_points or offsets, got {grid!r}")
    n, k = w.shape
    kb = -(-k // block_size)
    codes = np.empty((n, kb, block_size), np.uint8)
    scales = np.empty((n, kb), np.float32)
    zero_points = np.empty((n, kb), np.uint8)
    offsets = np.empty((n, kb), np.float32) if grid == "offsets" else None
    rows = max(1, CHUNK_ELEMENTS // (kb * block_size))
    _map(lambda r: _quantize_rows(w, r, rows, bits, grid, kb, block_size, codes, scales, zero_points, offsets),
         list(range(0, n, rows)))
    zp = None if grid == "symmetric" else pack_zero_points(zero_points, bits)
    return BlockQuant(pack(codes, bits), scales, zp, bits, block_size, (n, k), offsets)
