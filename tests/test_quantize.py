"""model_builder.quantize against its error bounds, onnxruntime's quantizer, MatMulNBits, GatherBlockQuantized, gguf."""
from __future__ import annotations

import gguf
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.capi._pybind_state import quantize_matmul_4bits, quantize_matmul_8bits

from llm_runtime.model_builder.gguf_blocks import q4_0 as from_gguf_q4_0
from llm_runtime.model_builder.quantize import (
    BlockQuant,
    dequantize_blockwise,
    gather_block_quantized_inputs,
    pack_zero_points,
    quantize_blockwise,
    stack_rows,
    unpack,
    zero_points_of,
)

Q4_0 = gguf.GGMLQuantizationType.Q4_0


def weights(n: int, k: int, seed: int = 0) -> np.ndarray:
    """float32 [n, k] with row magnitudes spread over two decades, one all-zero row."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k)).astype(np.float32) * rng.uniform(0.02, 2.0, (n, 1)).astype(np.float32)
    w[1] = 0
    return w


def per_element(bq: BlockQuant, blockwise: np.ndarray) -> np.ndarray:
    """[N, k_blocks] -> [N, K]: each element's block value."""
    return np.repeat(blockwise, bq.block_size, axis=1)[:, : bq.shape[1]]


def run(nodes: list, inputs: dict[str, np.ndarray], inits: dict[str, np.ndarray], out_dtype=TensorProto.FLOAT):
    """Run a small com.microsoft graph (opset 21) on the CPU provider, feeding `inputs`."""
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
         for n, a in inputs.items()],
        [helper.make_tensor_value_info("y", out_dtype, None)],
        [numpy_helper.from_array(a, n) for n, a in inits.items()])
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=10)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(["y"], inputs)[0]


def matmul_nbits(x: np.ndarray, bq: BlockQuant, accuracy_level: int = 0) -> np.ndarray:
    n, k = bq.shape
    inits = {"B": bq.q, "scales": bq.scales}
    names = ["x", "B", "scales"]
    if bq.zero_points is not None:
        inits["zp"] = bq.zero_points
        names.append("zp")
    node = helper.make_node("MatMulNBits", names, ["y"], domain="com.microsoft", K=k, N=n, bits=bq.bits,
                            block_size=bq.block_size, accuracy_level=accuracy_level)
    return run([node], {"x": x}, inits)


def gather_block_quantized(ids: np.ndarray, bq: BlockQuant, zero_points: np.ndarray | None = None) -> np.ndarray:
    data, scales, zps = gather_block_quantized_inputs(bq)
    zps = zps if zero_points is None else zero_points
    inits = {"data": data, "scales": scales}
    names = ["data", "ids", "scales"]
    if zps is not None:
        inits["zp"] = zps
        names.append("zp")
    node = helper.make_node("GatherBlockQuantized", names, ["y"], domain="com.microsoft", bits=bq.bits,
                            block_size=bq.block_size, gather_axis=0, quantize_axis=1)
    return run([node], {"ids": ids}, inits)


def mlas_quantize(w: np.ndarray, bits: int, block: int, symmetric: bool):
    """onnxruntime's own quantizer (what matmul_nbits_quantizer calls): MatMul B [K, N] in, MatMulNBits out."""
    n, k = w.shape
    kb = -(-k // block)
    b = np.ascontiguousarray(np.pad(w, ((0, 0), (0, kb * block - k))).T)
    q = np.zeros((n, kb, block * bits // 8), np.uint8)
    scales = np.zeros((n, kb), np.float32)
    zp = np.zeros((n, -(-kb * bits // 8)), np.uint8)
    (quantize_matmul_4bits if bits == 4 else quantize_matmul_8bits)(q, b, scales, zp, block, n, kb * block, symmetric)
    return q, scales, zp


# --- numpy only ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("block,k", [(32, 96), (64, 200), (128, 130), (16, 48)])
def test_bit_exact_with_onnxruntime_quantizer(bits, symmetric, block, k):
    w = weights(21, k, seed=block + k)
    bq = quantize_blockwise(w, bits, block, symmetric)
    q, scales, zp = mlas_quantize(w, bits, block, symmetric)
    assert bq.q.shape == q.shape and bq.scales.shape == scales.shape
    np.testing.assert_array_equal(bq.q, q)
    np.testing.assert_array_equal(bq.scales, scales)
    if symmetric:
        assert bq.zero_points is None
    else:
        np.testing.assert_array_equal(bq.zero_points, zp)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("k", [256, 100])  # 100: the last block of 32 is zero-padded
def test_symmetric_error_bound(bits, k):
    """|error| <= |scale|/2 except for opposite-sign values beyond (2^(b-1) - 1)|scale|, which clip: <= |scale|."""
    w = weights(64, k)
    bq = quantize_blockwise(w, bits, 32)
    err = np.abs(dequantize_blockwise(bq) - w)
    s = np.abs(per_element(bq, bq.scales))
    eps = 1e-6 * np.abs(w).max()
    half = 2 ** (bits - 1)
    with np.errstate(invalid="ignore"):  # the all-zero row has scale 0
        clipped = w / per_element(bq, bq.scales) > half - 1 + 0.5  # its code would pass 2^bits - 1
    assert clipped.any() and not clipped[1].any()
    assert np.all(err[~clipped] <= s[~clipped] / 2 + eps)
    assert np.all(err <= s + eps)
    absmax = np.abs(np.pad(w, ((0, 0), (0, -k % 32)))).reshape(64, -1, 32).max(-1)
    np.testing.assert_array_equal(np.abs(bq.scales), absmax / half)
    assert np.all(dequantize_blockwise(bq)[1] == 0) and np.all(bq.scales[1] == 0)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("k", [256, 100])
def test_asymmetric_error_bound(bits, k):
    """The zero point is rounded, so both ends of [min, max] land within half a step: |error| <= scale/2."""
    w = weights(64, k) + np.float32(0.3)  # off-centre rows make the zero points matter
    bq = quantize_blockwise(w, bits, 32, symmetric=False)
    assert bq.zero_points.shape == (64, -(-(-(-k // 32)) * bits // 8))
    err = np.abs(dequantize_blockwise(bq) - w)
    assert np.all(err <= per_element(bq, bq.scales) / 2 + 1e-6 * np.abs(w).max())
    assert len(np.unique(zero_points_of(bq))) > 3


@pytest.mark.parametrize("bits", [4, 8])
def test_symmetric_grid_round_trips_exactly(bits):
    """Multiples of a per-block s (either sign) whose largest-magnitude member is -2^(b-1) s come back exactly."""
    rng = np.random.default_rng(1)
    n, kb, block = 16, 5, 32
    half = 2 ** (bits - 1)
    codes = rng.integers(1, 2 ** bits, (n, kb, block))
    codes[:, :, 7] = 0  # the block's -2^(b-1) member
    s = rng.uniform(0.001, 1, (n, kb, 1)).astype(np.float32) * rng.choice([-1, 1], (n, kb, 1)).astype(np.float32)
    w = ((codes - half).astype(np.float32) * s).reshape(n, kb * block)
    bq = quantize_blockwise(w, bits, block)
    np.testing.assert_array_equal(bq.scales, s[..., 0])
    np.testing.assert_array_equal(dequantize_blockwise(bq), w)


@pytest.mark.parametrize("bits", [4, 8])
def test_asymmetric_grid_round_trips_exactly(bits):
    """(c - z) s with both end codes present in each block and s a power of two (so max - min is exact)."""
    rng = np.random.default_rng(2)
    n, kb, block = 16, 3, 64
    top = 2 ** bits - 1
    codes = rng.integers(0, top + 1, (n, kb, block))
    codes[:, :, 0], codes[:, :, 1] = 0, top
    z = rng.integers(0, top + 1, (n, kb, 1))
    s = np.float32(2.0) ** rng.integers(-12, 2, (n, kb, 1)).astype(np.float32)
    w = ((codes - z).astype(np.float32) * s).reshape(n, kb * block)
    bq = quantize_blockwise(w, bits, block, symmetric=False)
    np.testing.assert_array_equal(zero_points_of(bq), z[..., 0])
    np.testing.assert_array_equal(dequantize_blockwise(bq), w)


def test_layout():
    w = weights(3, 40)
    bq = quantize_blockwise(w, 4, 16, symmetric=False)
    assert bq.q.shape == (3, 3, 8) and bq.q.dtype == np.uint8
    assert bq.scales.shape == (3, 3) and bq.scales.dtype == np.float32
    assert bq.zero_points.shape == (3, 2) and np.all(bq.zero_points[:, 1] >> 4 == 8)  # spare nibble, as MLAS
    # 4-bit packing: low nibble = even element
    codes = np.clip(np.rint(w[0, :16] / bq.scales[0, 0]) + zero_points_of(bq)[0, 0], 0, 15).astype(np.uint8)
    np.testing.assert_array_equal(bq.q[0, 0], codes[0::2] | (codes[1::2] << 4))
    # the padded tail of the last block (elements 40..47) holds the zero point, i.e. the value 0
    np.testing.assert_array_equal(unpack(bq.q, 4)[:, 2, 8:], np.repeat(zero_points_of(bq)[:, 2:], 8, axis=1))
    assert dequantize_blockwise(bq).shape == (3, 40)
    for bad in [dict(bits=3, block_size=32), dict(bits=4, block_size=48), dict(bits=4, block_size=8)]:
        with pytest.raises(ValueError):
            quantize_blockwise(w, **bad)


def test_q4_0_is_a_fixed_point_of_quantize_blockwise():
    """ggml's Q4_0 uses the same rule (d = m / -8), so re-quantizing its values reproduces its blocks."""
    raw = gguf.quants.quantize(weights(24, 128, seed=4), Q4_0)
    bq = from_gguf_q4_0(raw, (24, 128))
    again = quantize_blockwise(dequantize_blockwise(bq), 4, 32)
    np.testing.assert_array_equal(again.q, bq.q)
    np.testing.assert_array_equal(again.scales, bq.scales)


def test_stack_rows_makes_zero_points_and_offsets_explicit():
    a = quantize_blockwise(weights(6, 96, seed=12), 4, 32)  # symmetric: implied zero point 8, no offsets
    b = quantize_blockwise(weights(5, 96, seed=13), 4, 32, symmetric=False)
    c = BlockQuant(b.q, b.scales, b.zero_points, 4, 32, b.shape, offsets=np.full(b.scales.shape, 0.25, np.float32))
    stacked = stack_rows([a, b, c])
    assert stacked.shape == (16, 96) and stacked.offsets.shape == (16, 3)
    np.testing.assert_array_equal(dequantize_blockwise(stacked),
                                  np.concatenate([dequantize_blockwise(p) for p in (a, b, c)]))
    assert stack_rows([a]) is a
    with pytest.raises(ValueError):
        stack_rows([a, quantize_blockwise(weights(2, 96), 8, 32)])


# --- through onnxruntime ------------------------------------------------------------------------------------

def assert_close(y, x, w, rtol):
    """|y - x @ w.T| <= rtol * (|x| @ |w|.T): relative to the size of the terms summed."""
    ref = x.astype(np.float64) @ w.astype(np.float64).T
    scale = np.abs(x).astype(np.float64) @ np.abs(w).astype(np.float64).T
    assert np.all(np.abs(y - ref) <= rtol * scale + 1e-7), np.max(np.abs(y - ref) / (scale + 1e-12))


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("block", [32, 64, 128])
def test_matmul_nbits_matches_dequantized_matmul(bits, symmetric, block):
    k = 320  # 10, 5 (odd: spare zero-point nibble) and 2.5 (padded) blocks
    bq = quantize_blockwise(weights(48, k, seed=block), bits, block, symmetric)
    x = np.random.default_rng(5).standard_normal((3, k)).astype(np.float32)
    assert_close(matmul_nbits(x, bq), x, dequantize_blockwise(bq), rtol=1e-4)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_matmul_nbits_accuracy_level_4(bits, symmetric):
    """accuracy_level 4 rounds x to int8 per block of K (step amax/127), so each product term may be off by
    half that step times |w|; the bound sums exactly that, plus float slack."""
    k, block = 256, 32
    bq = quantize_blockwise(weights(48, k, seed=6), bits, block, symmetric)
    w = dequantize_blockwise(bq)
    x = np.random.default_rng(7).standard_normal((4, k)).astype(np.float32)
    y = matmul_nbits(x, bq, accuracy_level=4)
    step = np.abs(x).reshape(4, -1, block).max(-1) / 127  # [M, k_blocks]
    bound = (np.repeat(step / 2, block, axis=1) @ np.abs(w).T) * 1.01 + 1e-4 * (np.abs(x) @ np.abs(w).T)
    err = np.abs(y - x.astype(np.float64) @ w.T.astype(np.float64))
    assert np.all(err <= bound), np.max(err / bound)
    assert err.max() > 0  # it really took the int8 path


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("k,block", [(256, 32), (320, 128)])  # 320: the last block is padded
def test_gather_block_quantized_reads_dequantized_rows(bits, symmetric, k, block):
    bq = quantize_blockwise(weights(50, k, seed=k + bits), bits, block, symmetric)
    ids = np.array([[0, 7, 49], [1, 7, 23]], np.int64)
    y = gather_block_quantized(ids, bq)
    assert y.shape == (2, 3, k)
    np.testing.assert_array_equal(y, dequantize_blockwise(bq)[ids])


@pytest.mark.parametrize("bits", [4, 8])
def test_gather_block_quantized_default_zero_point_is_the_matmul_nbits_one(bits):
    """For uint8 data a missing zero_points input means 2^(bits-1): passing it explicitly changes nothing."""
    bq = quantize_blockwise(weights(20, 96, seed=10), bits, 32)
    ids = np.arange(20, dtype=np.int64)[None]
    explicit = pack_zero_points(zero_points_of(bq), bits)
    np.testing.assert_array_equal(gather_block_quantized(ids, bq), gather_block_quantized(ids, bq, explicit))
    np.testing.assert_array_equal(gather_block_quantized(ids, bq)[0], dequantize_blockwise(bq))
