"""Emits the decoder graph: embeddings, N transformer layers, final norm, lm_head, logits selection."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from . import contract as C
from . import quantize
from .architectures import Architecture
from .config import ModelConfig
from .graph_writer import MS_DOMAIN, GraphWriter
from .linear import linear, matmul_nbits, quantized_weight
from .precision import BuildOptions
from .rope import cos_sin_cache
from .weights import ATTN, LAYER, MLP, Weights

ONNX_TYPE = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16}
EMBED, NORM, LM_HEAD = "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"


class DecoderEmitter:
    """One build of one graph; methods named by the subgraph they emit."""

    def __init__(self, g: GraphWriter, cfg: ModelConfig, arch: Architecture, opts: BuildOptions,
                 weights: Weights, contract: C.GraphContract, progress=lambda: None):
        self.g, self.cfg, self.arch, self.opts, self.w = g, cfg, arch, opts, weights
        self.contract = contract
        self.io = opts.io_dtype
        self.progress = progress

    def emit(self) -> None:
        g, cfg = self.g, self.cfg
        kv_type = ONNX_TYPE[self.io]
        ids = g.input(C.INPUT_IDS, TensorProto.INT64, ["batch_size", "sequence_length"])
        mask = g.input(C.ATTENTION_MASK, TensorProto.INT64, ["batch_size", "total_sequence_length"])
        for i in range(cfg.num_layers):
            for name in self.contract.past_names(i):
                g.input(name, kv_type, ["batch_size", cfg.num_kv_heads, "past_sequence_length", cfg.head_dim])
        g.output(C.LOGITS, TensorProto.FLOAT, ["batch_size", "sequence_length", cfg.vocab_size])
        for i in range(cfg.num_layers):
            for name in self.contract.present_names(i):
                g.output(name, kv_type, ["batch_size", cfg.num_kv_heads, "total_sequence_length", cfg.head_dim])
        seqlens_k, total, query_seqlens = self.attention_lengths(ids, mask)
        self.lm_head_quant = self.quantized_lm_head()
        x = self.embedding(ids)
        self.progress()
        residual, h = x, self.rms_norm("/model/layers.0/input_layernorm", x, LAYER.format(i=0) + "input_layernorm.weight")
        cos, sin = self.rotary_caches()
        for i in range(cfg.num_layers):
            attn = self.attention(i, h, seqlens_k, total, query_seqlens, cos, sin)
            h, residual = self.skip_norm(f"/model/layers.{i}/post_attention_layernorm", attn, residual,
                                         LAYER.format(i=i) + "post_attention_layernorm.weight")
            mlp = self.mlp(i, h)
            last = i == cfg.num_layers - 1
            norm = NORM if last else LAYER.format(i=i + 1) + "input_layernorm.weight"
            h, residual = self.skip_norm("/model/norm" if last else f"/model/layers.{i + 1}/input_layernorm",
                                         mlp, residual, norm)
            self.progress()
        self.logits(h, ids)

    # input_ids: [B, S], attention_mask: [B, T] -> seqlens_k int32 [B], total int32 [], query_seqlens int32 [B]
    def attention_lengths(self, ids: str, mask: str) -> tuple[str, str, str]:
        """
        attention_mask -> ReduceSum(axis 1) -> Sub 1 -> Cast int32 --------------------> seqlens_k
        attention_mask -> Shape -> Gather[1] -> Cast int32 ---------------------------> total_sequence_length
        query_seqlens (default [-1]) -> Less 0 ? min(S, seqlens_k + 1) : query_seqlens -> query_seqlens
        """
        g, p = self.g, "/model/attn_mask"
        qs_in = g.input(C.QUERY_SEQLENS, TensorProto.INT64, ["batch_size_or_1"])
        g.initializer(C.QUERY_SEQLENS, np.array([-1], dtype=np.int64))
        summed = g.op("ReduceSum", [mask, g.constant(f"{p}/axes", np.array([1], np.int64))], f"{p}/ReduceSum", keepdims=0)
        total_tokens = g.op("Cast", [summed], f"{p}/Cast_tokens", to=TensorProto.INT32)
        seqlens_k = g.op("Sub", [total_tokens, g.constant(f"{p}/one", np.int32(1))], f"{p}/Sub")
        mask_shape = g.op("Shape", [mask], f"{p}/Shape")
        total = g.op("Cast", [g.op("Gather", [mask_shape, g.constant(f"{p}/idx1", np.int64(1))], f"{p}/Gather", axis=0)],
                     f"{p}/Cast_total", to=TensorProto.INT32)
        seq = g.op("Gather", [g.op("Shape", [ids], f"{p}/Shape_ids"), g.constant(f"{p}/idx1b", np.int64(1))],
                   f"{p}/Gather_seq", axis=0)
        derived = g.op("Min", [total_tokens, g.op("Cast", [seq], f"{p}/Cast_seq", to=TensorProto.INT32)], f"{p}/Min")
        is_default = g.op("Less", [qs_in, g.constant(f"{p}/zero64", np.int64(0))], f"{p}/Less")
        given = g.op("Cast", [qs_in], f"{p}/Cast_query_seqlens", to=TensorProto.INT32)
        query_seqlens = g.op("Where", [is_default, derived, given], f"{p}/Where")
        return seqlens_k, total, query_seqlens

    def rotary_caches(self) -> tuple[str, str]:
        cos, sin = cos_sin_cache(self.cfg, self.cfg.max_positions)
        return (self.g.initializer("cos_cache", cos.astype(self.io)),
                self.g.initializer("sin_cache", sin.astype(self.io)))

    def quantized_lm_head(self) -> quantize.BlockQuant | None:
        bits = self.opts.head_bits
        if not bits:
            return None
        src = LM_HEAD if not self.cfg.tie_embeddings else EMBED
        return quantized_weight(self.w, [src], [(self.cfg.vocab_size, self.cfg.hidden_size)], bits, self.opts)

    # input_ids [B, S] -> hidden [B, S, H]
    def embedding(self, ids: str) -> str:
        g, cfg, p = self.g, self.cfg, "/model/embed_tokens"
        if self.cfg.tie_embeddings and self.lm_head_quant is not None:
            # Tied embeddings read through GatherBlockQuantized from the lm_head's quantized weights.
            bq = self.lm_head_quant
            data, scales, zps = quantize.gather_block_quantized_inputs(bq)
            inputs = [g.initializer("model.embed_tokens.qweight", data), ids,
                      g.initializer("model.embed_tokens.scales", scales.astype(self.io))]
            if zps is not None:
                inputs.append(g.initializer("model.embed_tokens.qzeros", zps))
            return g.op("GatherBlockQuantized", inputs, f"{p}/GatherBlockQuantized", MS_DOMAIN,
                        bits=bq.bits, block_size=bq.block_size, gather_axis=0, quantize_axis=1)
        table = self.w.tensor(EMBED, (cfg.vocab_size, cfg.hidden_size)).astype(self.io)
        self.embed_table = g.initializer(EMBED, table)
        return g.op("Gather", [self.embed_table, ids], f"{p}/Gather", axis=0)

    def rms_norm(self, p: str, x: str, weight: str) -> str:
        w = self.g.initializer(weight, self.w.tensor(weight, (self.cfg.hidden_size,)).astype(self.io))
        return self.g.op("RMSNormalization", [x, w], f"{p}/RMSNormalization",
                         axis=-1, epsilon=self.cfg.rms_norm_eps, stash_type=1)

    def skip_norm(self, p: str, x: str, residual: str, weight: str) -> tuple[str, str]:
        """(x + residual) -> RMSNorm; returns (normed, the new residual sum)."""
        w = self.g.initializer(weight, self.w.tensor(weight, (self.cfg.hidden_size,)).astype(self.io))
        out, _, _, total = self.g.node("SkipSimplifiedLayerNormalization", [x, residual, w],
                                       [f"{p}/output_0", "", "", f"{p}/output_3"],
                                       f"{p}/SkipSimplifiedLayerNormalization", MS_DOMAIN,
                                       epsilon=self.cfg.rms_norm_eps)
        return out, total

    # hidden [B, S, H] -> attention output [B, S, H]; the layer's cache is read and written in place
    def attention(self, i: int, x: str, seqlens_k: str, total: str, query_seqlens: str, cos: str, sin: str) -> str:
        """
        x -> qkv_proj (packed Q|K|V) -> GroupQueryAttention(rotary fused, past/present cache) -> o_proj
        """
        g, cfg, prefix, p = self.g, self.cfg, LAYER.format(i=i), f"/model/layers.{i}/attn"
        names = [prefix + ATTN[k] + ".weight" for k in "qkv"]
        shapes = [(cfg.q_size, cfg.hidden_size), (cfg.kv_size, cfg.hidden_size), (cfg.kv_size, cfg.hidden_size)]
        biases = [prefix + ATTN[k] + ".bias" for k in "qkv"] if cfg.attention_bias else None
        qkv = linear(g, f"{p}/qkv_proj", x, self.w, names, shapes, self.opts, self.opts.bits, biases)
        past_k, past_v = self.contract.past_names(i)
        present_k, present_v = self.contract.present_names(i)
        inputs = [qkv, "", "", past_k, past_v, seqlens_k, total, cos, sin] + [""] * 7 + [query_seqlens]
        attn, _, _ = g.node("GroupQueryAttention", inputs, [f"{p}/GroupQueryAttention/output_0", present_k, present_v],
                            f"{p}/GroupQueryAttention", MS_DOMAIN, num_heads=cfg.num_heads,
                            kv_num_heads=cfg.num_kv_heads, do_rotary=1,
                            rotary_interleaved=int(self.arch.rotary_interleaved),
                            scale=float(cfg.head_dim ** -0.5))
        o_bias = [prefix + ATTN["o"] + ".bias"] if cfg.attention_bias and self.w.has(prefix + ATTN["o"] + ".bias") else None
        return linear(g, f"{p}/o_proj", attn, self.w, [prefix + ATTN["o"] + ".weight"],
                      [(cfg.hidden_size, cfg.q_size)], self.opts, self.opts.bits, o_bias)

    # hidden [B, S, H] -> [B, S, H]
    def mlp(self, i: int, x: str) -> str:
        """x -> gate_proj -> SiLU --+--> Mul -> down_proj
           x -> up_proj ------------+"""
        g, cfg, prefix, p = self.g, self.cfg, LAYER.format(i=i), f"/model/layers.{i}/mlp"
        up_shape, down_shape = (cfg.intermediate_size, cfg.hidden_size), (cfg.hidden_size, cfg.intermediate_size)

        def proj(key: str, inp: str, shape) -> str:
            bias = [prefix + MLP[key] + ".bias"] if cfg.mlp_bias else None
            return linear(g, f"{p}/{key}_proj", inp, self.w, [prefix + MLP[key] + ".weight"], [shape],
                          self.opts, self.opts.bits, bias)

        gate, up = proj("gate", x, up_shape), proj("up", x, up_shape)
        act = g.op("Mul", [gate, g.op("Sigmoid", [gate], f"{p}/act/Sigmoid")], f"{p}/act/Mul")
        return proj("down", g.op("Mul", [act, up], f"{p}/Mul"), down_shape)

    # hidden [B, S, H] -> logits [B, S, V], or [1, n, V] for the positions in logits_indices
    def logits(self, h: str, ids: str) -> None:
        """
        hidden -> Reshape [B*S, H] -> Gather(logits_indices, or every position when empty) -> lm_head
               -> Reshape [B, S, V] (default) or [1, n, V]
        """
        g, cfg, p = self.g, self.cfg, "/model/logits"
        idx = g.input(C.LOGITS_INDICES, TensorProto.INT64, ["num_logits"])
        g.initializer(C.LOGITS_INDICES, np.zeros((0,), np.int64))
        flat = g.op("Reshape", [h, g.constant(f"{p}/flat_shape", np.array([-1, cfg.hidden_size], np.int64))], f"{p}/Reshape_flat")
        ids_shape = g.op("Shape", [ids], f"{p}/Shape_ids")
        rows = g.op("ReduceProd", [ids_shape], f"{p}/ReduceProd", keepdims=1)  # [1] = B*S
        n = g.op("Size", [idx], f"{p}/Size")
        is_default = g.op("Equal", [n, g.constant(f"{p}/zero", np.int64(0))], f"{p}/Equal")
        all_rows = g.op("Mul", [rows, g.op("Cast", [is_default], f"{p}/Cast", to=TensorProto.INT64)], f"{p}/Mul")
        every = g.op("Range", [g.constant(f"{p}/start", np.int64(0)),
                               g.op("Squeeze", [all_rows, g.constant(f"{p}/axis0", np.array([0], np.int64))], f"{p}/Squeeze"),
                               g.constant(f"{p}/step", np.int64(1))], f"{p}/Range")
        picked = g.op("Gather", [flat, g.op("Concat", [idx, every], f"{p}/Concat_idx", axis=0)], f"{p}/Gather", axis=0)
        logits2d = self.lm_head(picked)
        batch = g.op("Where", [is_default, g.op("Slice", [ids_shape, g.constant(f"{p}/s0", np.array([0], np.int64)),
                                                            g.constant(f"{p}/s1", np.array([1], np.int64))], f"{p}/Slice_batch"),
                               g.constant(f"{p}/one", np.array([1], np.int64))], f"{p}/Where_batch")
        count = g.op("Shape", [picked], f"{p}/Shape_picked", end=1)
        shape = g.op("Concat", [batch, g.op("Div", [count, batch], f"{p}/Div"),
                                g.constant(f"{p}/vocab", np.array([cfg.vocab_size], np.int64))], f"{p}/Concat_shape", axis=0)
        logits = g.op("Reshape", [logits2d, shape], f"{p}/Reshape")
        if self.io is not np.float32:
            logits = g.op("Cast", [logits], f"{p}/Cast_float", to=TensorProto.FLOAT)
        g.node("Identity", [logits], [C.LOGITS], f"{p}/Identity")

    # hidden [n, H] -> [n, V]
    def lm_head(self, x: str) -> str:
        g, cfg, p = self.g, self.cfg, "/lm_head"
        if self.lm_head_quant is not None:
            return matmul_nbits(g, p, x, self.lm_head_quant, self.opts)
        if cfg.tie_embeddings:
            return g.op("Gemm", [x, self.embed_table], f"{p}/Gemm", transB=1)
        w = self.w.tensor(LM_HEAD, (cfg.vocab_size, cfg.hidden_size))
        return g.op("MatMul", [x, g.initializer("lm_head.weight", np.ascontiguousarray(w.T.astype(self.io)))], f"{p}/MatMul")
