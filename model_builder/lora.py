"""LoRA inputs of a build: the sites its targets make (one per packed linear input), the subgraph that adds each
row's own adapter to a linear's output, and the plain graph (no LoRA nodes) derived from the LoRA one.

The factors are graph inputs, not weights: the runtime binds a slot table it owns (llm_runtime/adapters/slots.py),
every loaded adapter's factors side by side, and each row's `lora_index` masks the columns of its own slot, so one
call mixes rows of several adapters and rows of none (index 0). Masking rather than gathering per row: a gather
copies a row's factors (about 30 MB per row at rank 16 on the default model, every step) where the masked product
reads each adapter once per call, whatever the number of rows, and the runner binds only the range of slots a call's
rows use (A is stored slot after slot, [W, in], read transposed by FusedMatMul, so any range of slots is one
contiguous view). Q, K and V read one input and are one site (A side by side, B block-diagonal into the packed
Q|K|V output): one FusedMatMul-Mul-MatMul instead of three, since on a small model much of a LoRA graph's cost is
its node count, for B's zeros (2/3 of qkv's B). Gate and up are a site each: their linears are apart, and one site
would read a B half zeros (1/5 of a slot's bytes on the default model) to save two nodes a layer.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from . import contract as C
from .config import ModelConfig
from .graph_writer import MS_DOMAIN, GraphWriter
from .weights import ATTN, LAYER, MLP

MODULES = {**ATTN, **MLP}  # target -> module name within a layer
GROUPS = ("qkv", "o", "gate", "up", "down")
ONNX_TYPE = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float16): TensorProto.FLOAT16}
JOIN = "/lora/join"  # the Add nodes that join a delta to its linear: the plain graph keeps their first input


def lora_sites(cfg: ModelConfig, targets: tuple[str, ...]) -> list[C.LoraSite]:
    """The sites of every layer for `targets`; a packed site holds only its targeted modules, each at its own
    output columns of the packed linear (k alone writes the K columns of Q|K|V)."""
    h, inter = cfg.hidden_size, cfg.intermediate_size
    layout = {"qkv": (h, [("q", cfg.q_size), ("k", cfg.kv_size), ("v", cfg.kv_size)]),
              "o": (cfg.q_size, [("o", h)]), "gate": (h, [("gate", inter)]), "up": (h, [("up", inter)]),
              "down": (inter, [("down", h)])}
    sites = []
    for i in range(cfg.num_layers):
        for group in GROUPS:
            in_dim, parts = layout[group]
            modules, column = [], 0
            for target, columns in parts:
                if target in targets:
                    modules.append((LAYER.format(i=i) + MODULES[target], column, columns))
                column += columns
            if modules:
                sites.append(C.LoraSite(f"layers.{i}.{group}", in_dim, column, tuple(modules)))
    return sites


class LoraEmitter:
    """Declares `lora_index`, the column-to-slot maps and each site's factors (all with empty defaults, so a
    runtime that feeds none runs the graph unchanged), and emits the per-site delta."""

    def __init__(self, g: GraphWriter, cfg: ModelConfig, targets: tuple[str, ...], io_dtype):
        self.g, self.io = g, np.dtype(io_dtype)
        self.sites = {s.name: s for s in lora_sites(cfg, targets)}
        self.index = g.input(C.LORA_INDEX, TensorProto.INT64, ["batch_size_or_1"])
        g.initializer(C.LORA_INDEX, np.zeros((1,), np.int64))
        self.masks: dict[int, str] = {}

    # lora_index [B] -> [B, 1, slots * n * rank]: 1 in the columns of the row's slot, else 0
    def mask(self, n: int) -> str:
        """
        lora_index [B] -> Unsqueeze [B, 1, 1] --+
        lora.slot_of.{n} [W] -------------------+-> Equal -> Cast io -> [B, 1, W]
        Made once per module count n (sites of n modules have n * rank columns per slot), shared by every layer.
        """
        if n not in self.masks:
            g, p = self.g, f"/model/lora/mask{n}"
            cols = g.input(C.LORA_SLOT_OF % n, TensorProto.INT64, [f"lora_columns_{n}"])
            g.initializer(C.LORA_SLOT_OF % n, np.zeros((0,), np.int64))
            rows = g.op("Unsqueeze", [self.index, g.constant(f"{p}/axes", np.array([1, 2], np.int64))], f"{p}/Unsqueeze")
            self.masks[n] = g.op("Cast", [g.op("Equal", [rows, cols], f"{p}/Equal")], f"{p}/Cast",
                                 to=ONNX_TYPE[self.io])
        return self.masks[n]

    def site(self, i: int, group: str) -> C.LoraSite | None:
        return self.sites.get(f"layers.{i}.{group}")

    # x [B, S, in], y [B, S, out] -> y + each row's x @ A[slot] @ B[slot]
    def add(self, i: int, group: str, x: str, y: str) -> str:
        """
        x [B, S, in] -> FusedMatMul(A [W, in], transB) -> Mul(mask [B, 1, W]) -> MatMul(B [W, out]) -> Add(y)
        W = slots * n * rank: the columns of the slots bound for this call; the mask keeps the row's own.
        """
        site = self.site(i, group)
        if site is None:
            return y
        return self.g.op("Add", [y, self.delta(site, x)], f"/model/layers.{i}{JOIN}/{group}")

    def delta(self, site: C.LoraSite, x: str) -> str:
        """x [B, S, in] -> [B, S, out]: the factors' product for each row's slot (zeros at index 0)."""
        layer, group = site.name.rsplit(".", 1)
        g, p, io, n = self.g, f"/model/{layer}/lora/{group}", ONNX_TYPE[self.io], len(site.modules)
        a = g.input(site.a_name, io, [f"lora_columns_{n}", site.in_dim])
        g.initializer(site.a_name, np.zeros((0, site.in_dim), self.io))
        b = g.input(site.b_name, io, [f"lora_columns_{n}", site.out_dim])
        g.initializer(site.b_name, np.zeros((0, site.out_dim), self.io))
        xa = g.op("FusedMatMul", [x, a], f"{p}/MatMulA", MS_DOMAIN, transA=0, transB=1, alpha=1.0)
        down = g.op("Mul", [xa, self.mask(n)], f"{p}/Mask")
        return g.op("MatMul", [down, b], f"{p}/MatMulB")


def plain_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """The LoRA graph without its LoRA nodes and inputs: each join's output replaced by the linear's own, so the
    rest is node for node the graph of a build without LoRA (the same external data file)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    lora = [node for node in graph.node if "/lora/" in node.name]
    renamed = {node.output[0]: node.input[0] for node in lora if JOIN in node.name}
    kept = [node for node in graph.node if "/lora/" not in node.name]
    for node in kept:
        for k, name in enumerate(node.input):
            if name in renamed:
                node.input[k] = renamed[name]
    del graph.node[:]
    graph.node.extend(kept)
    inputs = [i for i in graph.input if not _is_lora(i.name)]
    inits = [t for t in graph.initializer if not _is_lora(t.name) and "/lora/" not in t.name]
    del graph.input[:]
    graph.input.extend(inputs)
    del graph.initializer[:]
    graph.initializer.extend(inits)
    return out


def _is_lora(name: str) -> bool:
    """A LoRA input (or its default initializer)."""
    return name == C.LORA_INDEX or name.startswith(C.LORA_PREFIX)
