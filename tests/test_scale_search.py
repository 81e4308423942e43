"""model_builder.scale_search: the searched grids beat round-to-nearest on the error they minimise, keep
MatMulNBits' layout, and recover a grid the weights already sit on."""
from __future__ import annotations

import gguf
import numpy as np
import pytest

from llm_runtime.model_builder import gguf_blocks
from llm_runtime.model_builder.quantize import dequantize_blockwise, quantize_blockwise, unpack, zero_points_of
from llm_runtime.model_builder.scale_search import _weights, quantize_searched


def weights(n: int, k: int, seed: int = 0) -> np.ndarray:
    """Heavy-tailed rows (Student t, 4 degrees of freedom) at spread magnitudes, one all-zero row."""
    rng = np.random.default_rng(seed)
    w = rng.standard_t(4, (n, k)).astype(np.float32) * rng.uniform(0.01, 0.5, (n, 1)).astype(np.float32)
    w[2] = 0
    return w


def weighted_error(w: np.ndarray, bq, block: int) -> np.ndarray:
    """Per block: sum of importance * squared error, the objective of the search. [N, k_blocks]"""
    n, k = w.shape
    pad = -k % block
    x = np.pad(w, ((0, 0), (0, pad))).reshape(n, -1, block)
    d = np.pad(dequantize_blockwise(bq) - w, ((0, 0), (0, pad))).reshape(n, -1, block)
    return (_weights(x) * d * d).sum(-1)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("grid,symmetric", [("symmetric", True), ("zero_points", False)])
def test_search_never_loses_to_round_to_nearest(bits, grid, symmetric):
    """The search's candidates include round-to-nearest's own grid, refitted by least squares, so no block's
    weighted error is above round-to-nearest's; over the tensor it is clearly below."""
    w = weights(64, 320)
    searched, rtn = quantize_searched(w, bits, 32, grid), quantize_blockwise(w, bits, 32, symmetric)
    es, er = weighted_error(w, searched, 32), weighted_error(w, rtn, 32)
    assert np.all(es <= er * (1 + 1e-5) + 1e-12)
    assert es.sum() < 0.98 * er.sum()  # measured 0.95 / 0.97 (symmetric 4 / 8 bits), 0.88 (zero points)


@pytest.mark.parametrize("bits", [4, 8])
def test_offsets_beat_zero_points(bits):
    w = weights(64, 256, seed=1) + np.float32(0.05)
    off, zp = quantize_searched(w, bits, 32, "offsets"), quantize_searched(w, bits, 32, "zero_points")
    assert weighted_error(w, off, 32).sum() < weighted_error(w, zp, 32).sum()


def test_layout_matches_matmul_nbits():
    w = weights(5, 100)  # 4 blocks of 32, the last padded
    for grid in ("symmetric", "zero_points", "offsets"):
        bq = quantize_searched(w, 4, 32, grid)
        assert bq.q.shape == (5, 4, 16) and bq.scales.shape == (5, 4) and bq.shape == (5, 100)
        assert (bq.zero_points is None) == (grid == "symmetric")
        assert (bq.offsets is not None) == (grid == "offsets")
        assert np.all(dequantize_blockwise(bq)[2] == 0)  # the zero row stays zero
    bq = quantize_searched(w, 4, 32, "offsets")  # offsets stored around centered zero points (quantize.centered)
    assert np.all(np.abs(zero_points_of(bq) - unpack(bq.q, 4).mean(-1)) <= 0.5)
    with pytest.raises(ValueError):
        quantize_searched(w, 4, 32, "float")


def test_offsets_recover_a_q4_1_grid():
    """Weights that are dequantized Q4_1 blocks (what a GGUF re-quantized from its own values gives) come back
    on their own grid: the min/max candidate codes them exactly and the refit keeps d and m."""
    rng = np.random.default_rng(3)
    raw = gguf.quants.quantize(rng.standard_normal((32, 256)).astype(np.float32), gguf.GGMLQuantizationType.Q4_1)
    w = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q4_1)
    bq = quantize_searched(w, 4, 32, "offsets")
    assert np.abs(dequantize_blockwise(bq) - w).max() <= 1e-5 * np.abs(w).max()
    ref = gguf_blocks.q4_1(raw, (32, 256))
    np.testing.assert_array_equal(bq.q, ref.q)


@pytest.mark.parametrize("bits", [4, 8])
def test_a_grid_that_round_to_nearest_codes_exactly_stays_exact(bits):
    """Blocks already on a symmetric grid (multiples of an fp16 scale s whose largest magnitude is -2^(b-1) s, as
    Q4_0 / Q8_0 dequantize): round-to-nearest codes them exactly, and so must the search (its final fit is summed
    in float64; float32 sums left such blocks about 1e-7 off their grid)."""
    rng = np.random.default_rng(4)
    half = 2 ** (bits - 1)
    codes = rng.integers(-half, half, (48, 128)).astype(np.float32)
    codes[:, ::32] = -half  # each block's largest magnitude, as the symmetric rule puts it on code 0
    w = codes * rng.uniform(0.01, 0.5, (48, 1)).astype(np.float16).astype(np.float32)
    assert np.array_equal(dequantize_blockwise(quantize_blockwise(w, bits, 32)), w)
    assert np.array_equal(dequantize_blockwise(quantize_searched(w, bits, 32, "symmetric")), w)
