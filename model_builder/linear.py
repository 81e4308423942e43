"""Linear layers: float MatMul or MatMulNBits over blockwise-quantized weights."""
from __future__ import annotations

import numpy as np

from . import quantize
from .graph_writer import MS_DOMAIN, GraphWriter
from .precision import BuildOptions
from .weights import Weights

EXACT_BLOCKS = {("q4_0", 4): quantize.from_gguf_q4_0, ("q8_0", 8): quantize.from_gguf_q8_0}


def quantized_weight(weights: Weights, names: list[str], shapes: list[tuple[int, int]], bits: int,
                     opts: BuildOptions) -> quantize.BlockQuant:
    """Copy GGUF blocks that map exactly onto MatMulNBits; quantize the float weight otherwise."""
    blocks = weights.blocks(names) if opts.block_size == 32 and opts.symmetric else None
    convert = EXACT_BLOCKS.get((blocks.kind, bits)) if blocks is not None else None
    if convert is not None:
        return convert(blocks.data, blocks.shape)
    return quantize.quantize_blockwise(weights.matrix(names, shapes), bits, opts.block_size,
                                       symmetric=opts.symmetric)


def nbits_initializers(g: GraphWriter, name: str, bq: quantize.BlockQuant, opts: BuildOptions) -> list[str]:
    """Write MatMulNBits' weight, scales and (optional, else "") zero points; returns their names."""
    return [g.initializer(f"{name}.qweight", bq.q), g.initializer(f"{name}.scales", bq.scales.astype(opts.io_dtype)),
            g.initializer(f"{name}.qzeros", bq.zero_points) if bq.zero_points is not None else ""]


def matmul_nbits(g: GraphWriter, name: str, x: str, bq: quantize.BlockQuant, opts: BuildOptions,
                 bias: str = "", weights: list[str] | None = None) -> str:
    """x [.., K] -> [.., N] through MatMulNBits on weights [N, K] (already written when `weights` is given)."""
    n, k = bq.shape
    inputs = [x, *(weights or nbits_initializers(g, name, bq, opts))]
    if bias:
        inputs += ["", bias]
    return g.op("MatMulNBits", inputs, f"{name}/MatMulNBits", MS_DOMAIN, K=k, N=n, bits=bq.bits,
                block_size=bq.block_size, accuracy_level=opts.accuracy_level)


def linear(g: GraphWriter, name: str, x: str, weights: Weights, names: list[str],
           shapes: list[tuple[int, int]], opts: BuildOptions, bits: int | None,
           bias_names: list[str] | None = None) -> str:
    """Emit `x @ W.T + b` where W stacks the rows of the [out, in] tensors `names` (packed QKV)."""
    io = opts.io_dtype
    bias = None
    if bias_names:
        bias = np.concatenate([weights.tensor(n, (s[0],)) for n, s in zip(bias_names, shapes)]).astype(io)
    if bits:
        bq = quantized_weight(weights, names, shapes, bits, opts)
        return matmul_nbits(g, name, x, bq, opts, g.initializer(f"{name}.bias", bias) if bias is not None else "")
    w = weights.matrix(names, shapes)
    y = g.op("MatMul", [x, g.initializer(f"{name}.weight", np.ascontiguousarray(w.T.astype(io)))], f"{name}/MatMul")
    if bias is not None:
        y = g.op("Add", [y, g.initializer(f"{name}.bias", bias)], f"{name}/Add")
    return y
