"""Linear layers: float MatMul, or MatMulNBits over blockwise-quantized weights (GGUF blocks carried over exactly
where an encoding exists, `gguf_blocks.py`; otherwise quantized from float, `scale_search.py` or round-to-nearest).
"""
from __future__ import annotations

import numpy as np

from llm_runtime.model_builder import gguf_blocks, quantize

from .graph_writer import MS_DOMAIN, GraphWriter
from .precision import BuildOptions
from .scale_search import quantize_searched
from .weights import Weights


def quantize_float(w: np.ndarray, bits: int, opts: BuildOptions) -> quantize.BlockQuant:
    """float32 [N, K] -> blocks with the build's quantizer and grid."""
    if opts.quantizer == "rtn":
        return quantize.quantize_blockwise(w, bits, opts.block_size, symmetric=opts.symmetric)
    return quantize_searched(w, bits, opts.block_size, opts.grid)


def quantized_part(weights: Weights, name: str, shape: tuple[int, int], bits: int,
                   opts: BuildOptions, exact_bits_only: bool = False) -> quantize.BlockQuant:
    """One [out, in] tensor as MatMulNBits blocks: its GGUF blocks converted exactly when the build imports them
    and an encoding exists (with `exact_bits_only`, one of `bits` bits), else quantized at `bits`. Each outcome
    is counted in weights.summary."""
    fmt = weights.format(name)
    blocks = None if opts.requantize else weights.blocks(name)
    exact = blocks is not None and blocks.kind in gguf_blocks.CONVERTERS
    if exact and not (exact_bits_only and gguf_blocks.CONVERTERS[blocks.kind][1] != bits):
        bq = gguf_blocks.convert(blocks.kind, blocks.data, blocks.shape)
        native = gguf_blocks.NATIVE_BITS[blocks.kind]
        weights.summary.add(fmt, "copied exactly" if native == bq.bits else f"converted exactly to {bq.bits}-bit")
        return bq
    if fmt in ("F32", "F16", "BF16", "float"):
        reason = "float weights"
    elif opts.requantize:
        reason = "--requantize"
    elif exact:
        reason = "--lm-head-bits"
    elif blocks is None and fmt in gguf_blocks.CONVERTERS:
        reason = "part of a fused tensor"
    else:
        reason = f"no exact MatMulNBits encoding for {fmt}"
    weights.summary.add(fmt, f"requantized to {bits}-bit ({reason})")
    return quantize_float(weights.tensor(name, shape), bits, opts)


def quantized_groups(weights: Weights, names: list[str], shapes: list[tuple[int, int]], bits: int,
                     opts: BuildOptions) -> list[quantize.BlockQuant]:
    """The stacked rows of `names` (packed Q/K/V) as runs of parts that share bits and block size, each run one
    BlockQuant: one group unless the file stores the parts in formats of different widths (a Q6_K v_proj)."""
    groups: list[list[quantize.BlockQuant]] = []
    for name, shape in zip(names, shapes):
        bq = quantized_part(weights, name, shape, bits, opts)
        if groups and (groups[-1][0].bits, groups[-1][0].block_size) == (bq.bits, bq.block_size):
            groups[-1].append(bq)
        else:
            groups.append([bq])
    return [quantize.stack_rows(g) for g in groups]


def nbits_initializers(g: GraphWriter, name: str, bq: quantize.BlockQuant, opts: BuildOptions) -> list[str]:
    """Write MatMulNBits' weight, scales and (optional, else "") zero points; returns their names."""
    return [g.initializer(f"{name}.qweight", bq.q), g.initializer(f"{name}.scales", bq.scales.astype(opts.io_dtype)),
            g.initializer(f"{name}.qzeros", bq.zero_points) if bq.zero_points is not None else ""]


def block_indicator(g: GraphWriter, k: int, block: int, dtype) -> str:
    """A shared [K, k_blocks] 0/1 matrix: x @ it sums x over each block of K."""
    name = f"/quant/block_indicator_{k}x{block}_{np.dtype(dtype).name}"
    if not any(t.name == name for t in g.initializers):
        kb = -(-k // block)
        g.initializer(name, (np.arange(k)[:, None] // block == np.arange(kb)[None, :]).astype(dtype))
    return name


def offset_term(g: GraphWriter, name: str, x: str, bq: quantize.BlockQuant, opts: BuildOptions) -> str:
    """[.., K] -> [.., N]: sum over blocks b of offset[n, b] * (sum of x over block b), the part of
    x @ W.T that a per-block offset adds (W = (q - zp) * scale + offset).

    x -> MatMul(block indicator [K, kb]) -> MatMul(offsets.T [kb, N])
    """
    n, k = bq.shape
    sums = g.op("MatMul", [x, block_indicator(g, k, bq.block_size, opts.io_dtype)], f"{name}/BlockSums")
    offsets = g.initializer(f"{name}.offsets", np.ascontiguousarray(bq.offsets.T.astype(opts.io_dtype)))
    return g.op("MatMul", [sums, offsets], f"{name}/Offsets")


def matmul_nbits(g: GraphWriter, name: str, x: str, bq: quantize.BlockQuant, opts: BuildOptions,
                 bias: str = "", weights: list[str] | None = None) -> str:
    """x [.., K] -> [.., N] through MatMulNBits on weights [N, K] (already written when `weights` is given),
    plus the offset term when the blocks carry offsets:

    x -> MatMulNBits ------------------------------+-> Add
    x -> BlockSums -> Offsets (only with offsets) -+
    """
    n, k = bq.shape
    inputs = [x, *(weights or nbits_initializers(g, name, bq, opts))]
    if bias:
        inputs += ["", bias]
    y = g.op("MatMulNBits", inputs, f"{name}/MatMulNBits", MS_DOMAIN, K=k, N=n, bits=bq.bits,
             block_size=bq.block_size, accuracy_level=opts.accuracy_level(name, bq.bits))
    if bq.offsets is None:
        return y
    return g.op("Add", [y, offset_term(g, name, x, bq, opts)], f"{name}/AddOffsets")


def gather_offsets(g: GraphWriter, name: str, rows: str, ids: str, bq: quantize.BlockQuant, opts: BuildOptions) -> str:
    """GatherBlockQuantized's rows [.., K] plus each row's block offsets spread over their blocks:

    ids -> Gather(offsets [V, kb]) -> MatMul(block indicator.T [kb, K]) -> Add(rows)
    """
    n, k = bq.shape
    table = g.initializer(f"{name}.offsets", bq.offsets.astype(opts.io_dtype))
    picked = g.op("Gather", [table, ids], f"{name}/GatherOffsets", axis=0)
    spread = g.initializer(f"{name}.offset_spread", (np.arange(-(-k // bq.block_size))[:, None]
                                                      == np.arange(k)[None, :] // bq.block_size).astype(opts.io_dtype))
    return g.op("Add", [rows, g.op("MatMul", [picked, spread], f"{name}/SpreadOffsets")], f"{name}/AddOffsets")


def linear(g: GraphWriter, name: str, x: str, weights: Weights, names: list[str],
           shapes: list[tuple[int, int]], opts: BuildOptions, bits: int | None,
           bias_names: list[str] | None = None) -> str:
    """Emit `x @ W.T + b` where W stacks the rows of the [out, in] tensors `names` (packed QKV); parts of
    different block widths become one MatMulNBits each, concatenated."""
    io = opts.io_dtype
    bias = None
    if bias_names:
        bias = np.concatenate([weights.tensor(n, (s[0],)) for n, s in zip(bias_names, shapes)]).astype(io)
    if bits:
        groups = quantized_groups(weights, names, shapes, bits, opts)
        if len(groups) == 1:
            b = g.initializer(f"{name}.bias", bias) if bias is not None else ""
            return matmul_nbits(g, name, x, groups[0], opts, b)
        outs = [matmul_nbits(g, f"{name}/part{i}", x, bq, opts) for i, bq in enumerate(groups)]
        y = g.op("Concat", outs, f"{name}/Concat", axis=-1)
        return g.op("Add", [y, g.initializer(f"{name}.bias", bias)], f"{name}/Add") if bias is not None else y
    w = weights.matrix(names, shapes)
    y = g.op("MatMul", [x, g.initializer(f"{name}.weight", np.ascontiguousarray(w.T.astype(io)))], f"{name}/MatMul")
    if bias is not None:
        y = g.op("Add", [y, g.initializer(f"{name}.bias", bias)], f"{name}/Add")
    return y
