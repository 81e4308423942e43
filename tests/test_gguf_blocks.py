"""model_builder.gguf_blocks: every GGUF block format it converts gives gguf's own dequantized numbers, bit for bit,
and through MatMulNBits (with the offset term beside it) / GatherBlockQuantized the same products to fp32
summation rounding."""
from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto

from llm_runtime.model_builder import gguf_blocks
from llm_runtime.model_builder.graph_writer import MS_DOMAIN, GraphWriter
from llm_runtime.model_builder.linear import gather_offsets, matmul_nbits
from llm_runtime.model_builder.precision import BuildOptions
from llm_runtime.model_builder.quantize import dequantize_blockwise, gather_block_quantized_inputs

QT = gguf.GGMLQuantizationType
FORMATS = list(gguf_blocks.CONVERTERS)
U = 2.0 ** -24  # fp32 unit roundoff


def random_blocks(kind: str, n: int, k: int, seed: int = 0) -> np.ndarray:
    """uint8 [n, k / block * bytes] of GGUF type `kind`: gguf's own quantizer where it has one (the 32-formats),
    else random bytes (any byte pattern is a valid K-quant block) with fp16 d / dmin set to weight-sized values."""
    rng = np.random.default_rng(seed)
    qtype = QT[kind]
    if kind in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"):
        w = rng.standard_normal((n, k)).astype(np.float32) * 0.05 + rng.uniform(-0.02, 0.02, (n, 1)).astype(np.float32)
        return gguf.quants.quantize(w, qtype)
    block, nbytes = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (n, k // block, nbytes), dtype=np.uint8)
    d = rng.uniform(2e-5, 2e-4, (n, k // block)).astype(np.float16).view(np.uint8).reshape(n, k // block, 2)
    if kind == "Q6_K":
        raw[..., 208:210] = d
    else:  # Q4_K / Q5_K: d, then dmin
        raw[..., 0:2] = d
        raw[..., 2:4] = (rng.uniform(2e-4, 2e-3, (n, k // block)).astype(np.float16)
                         .view(np.uint8).reshape(n, k // block, 2))
    return raw.reshape(n, -1)


@pytest.mark.parametrize("kind", FORMATS)
def test_converted_blocks_dequantize_to_gguf_values_bit_for_bit(kind):
    n, k = 24, 512
    raw = random_blocks(kind, n, k)
    bq = gguf_blocks.convert(kind, raw, (n, k))
    bits = gguf_blocks.CONVERTERS[kind][1]
    assert bq.bits == bits and bq.shape == (n, k)
    assert bq.block_size == (16 if kind == "Q6_K" else 32)
    has_offset = kind in ("Q4_1", "Q5_1", "Q4_K", "Q5_K")
    assert (bq.offsets is not None) == has_offset
    ref = gguf.quants.dequantize(raw, QT[kind])
    assert np.abs(ref).max() > 0 and len(np.unique(ref)) > 100
    np.testing.assert_array_equal(dequantize_blockwise(bq), ref)


def test_bad_row_length_is_refused():
    with pytest.raises(ValueError, match="whole blocks of 256"):
        gguf_blocks.convert("Q4_K", np.zeros((2, 144), np.uint8), (2, 128))


def run_graph(tmp: Path, emit, inputs: dict[str, np.ndarray], level: int | None = None) -> np.ndarray:
    """Build a one-output graph with `emit(g) -> output name` through GraphWriter, run it on the CPU provider;
    `level` overrides MatMulNBits' accuracy_level (0: float activations)."""
    g = GraphWriter(tmp, "model.onnx.data")
    for name, a in inputs.items():
        g.input(name, TensorProto.FLOAT if a.dtype == np.float32 else TensorProto.INT64, list(a.shape))
    y = emit(g)
    for node in g.nodes:
        for a in node.attribute:
            if a.name == "accuracy_level" and level is not None:
                a.i = level
    g.node("Identity", [y], ["y"], "/out/Identity")
    g.output("y", TensorProto.FLOAT, None)
    g.save(tmp / "model.onnx", "g", {})
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(tmp / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    return sess.run(["y"], inputs)[0]


@pytest.mark.parametrize("kind", FORMATS)
def test_matmul_nbits_with_offsets_computes_the_gguf_product(kind, tmp_path):
    """At accuracy_level 0 the layer computes x @ W.T with W = gguf's dequantized weights, in fp32. Bound: a
    sum of K products (and kb block sums times offsets) in fp32 errs by at most (K + kb + 2) u times the sum of
    the magnitudes it adds, |x| @ |(q - zp) * scale|.T + |x| @ |offsets spread|.T."""
    n, k = 40, 512
    raw = random_blocks(kind, n, k, seed=1)
    bq = gguf_blocks.convert(kind, raw, (n, k))
    x = np.random.default_rng(2).standard_normal((3, k)).astype(np.float32)
    y = run_graph(tmp_path, lambda g: matmul_nbits(g, "/lin", "x", bq, BuildOptions()), {"x": x}, level=0)
    w = gguf.quants.dequantize(raw, QT[kind]).astype(np.float64)
    ref = x.astype(np.float64) @ w.T
    spread = np.repeat(bq.offsets, bq.block_size, axis=1) if bq.offsets is not None else np.zeros_like(w)
    mags = np.abs(x) @ np.abs(w - spread).T + np.abs(x) @ np.abs(spread).T
    kb = k // bq.block_size
    err = np.abs(y - ref)
    assert np.all(err <= (k + kb + 2) * U * mags), (err / mags).max()
    assert err.max() < 1e-5 * np.abs(ref).max()  # measured: ~1e-7 relative


@pytest.mark.parametrize("kind", ["Q4_1", "Q4_K", "Q6_K", "Q8_0"])
def test_gather_block_quantized_with_offsets_reads_gguf_rows(kind, tmp_path):
    n, k = 30, 256
    raw = random_blocks(kind, n, k, seed=3)
    bq = gguf_blocks.convert(kind, raw, (n, k))
    ids = np.array([[0, 7, 29], [3, 3, 11]], np.int64)
    data, scales, zps = gather_block_quantized_inputs(bq)
    opts = BuildOptions()

    def emit(g):
        inputs = [g.initializer("data", data), "ids", g.initializer("scales", scales)]
        if zps is not None:
            inputs.append(g.initializer("zp", zps))
        rows = g.op("GatherBlockQuantized", inputs, "/embed/GatherBlockQuantized", MS_DOMAIN, bits=bq.bits,
                    block_size=bq.block_size, gather_axis=0, quantize_axis=1)
        return gather_offsets(g, "/embed", rows, "ids", bq, opts) if bq.offsets is not None else rows

    y = run_graph(tmp_path, emit, {"ids": ids})
    # one rounding, (q - zp) * scale + offset, as gguf's dequantizer: bit for bit
    np.testing.assert_array_equal(y, gguf.quants.dequantize(raw, QT[kind])[ids])
