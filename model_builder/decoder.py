"""Emits the decoder graph: embeddings, N transformer layers, final norm, lm_head, logits selection.

What differs between architectures is read from the row (`Architecture`) and the resolved `ModelConfig`;
the attention subgraph lives in `attention.py`.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from . import contract as C
from . import gguf_blocks, quantize
from .architectures import Architecture
from .attention import AttentionLengths, AttentionParts, attention
from .config import ModelConfig
from .graph_writer import MS_DOMAIN, GraphWriter
from .linear import gather_offsets, linear, matmul_nbits, nbits_initializers, quantized_part
from .lora import LoraEmitter
from .precision import BuildOptions
from .rope import rotary_caches
from .weights import LAYER, MLP, NORM, Weights

ONNX_TYPE = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16}
EMBED, FINAL_NORM, LM_HEAD = "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"
GELU_APPROXIMATION = {"gelu_tanh": "tanh", "gelu": "none"}


class DecoderEmitter:
    """One build of one graph; methods named by the subgraph they emit."""

    def __init__(self, g: GraphWriter, cfg: ModelConfig, arch: Architecture, opts: BuildOptions,
                 weights: Weights, contract: C.GraphContract, progress=lambda: None):
        self.g, self.cfg, self.arch, self.opts, self.w = g, cfg, arch, opts, weights
        self.contract = contract
        self.io = opts.io_dtype
        self.progress = progress
        self.lora = LoraEmitter(g, cfg, opts.lora_targets, self.io) if opts.lora_targets else None
        self.attention_parts = AttentionParts(g, cfg, arch, opts, weights, contract, self.rms_norm, self.lora)

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
        lengths = self.attention_lengths(ids, mask)
        self.lm_head_quant = self.quantized_lm_head()
        self.lm_head_weights = (nbits_initializers(g, "/lm_head", self.lm_head_quant, self.opts)
                                if self.lm_head_quant is not None else None)
        x = self.embedding(ids)
        self.progress()
        residual, h = x, self.rms_norm("/model/layers.0/input_layernorm", x, LAYER.format(i=0) + NORM["input"])
        rotary = rotary_caches(g, cfg, self.io, lengths.total)
        for i in range(cfg.num_layers):
            h, residual = self.layer(i, h, residual, lengths, rotary)
            self.progress()
        self.logits(h, ids)

    # hidden [B, S, H] (normed), residual [B, S, H] -> the next layer's (normed input, residual)
    def layer(self, i: int, h: str, residual: str, lengths: AttentionLengths,
              rotary: dict[str, tuple[str, str]]) -> tuple[str, str]:
        """
        h -> attention [-> post_attention_layernorm] -> (+ residual) -> RMSNorm -> mlp [-> post_feedforward_layernorm]
          -> (+ residual) -> RMSNorm: the next layer's input_layernorm, or the final norm
        Each residual add fuses with the norm after it (SkipSimplifiedLayerNormalization); the bracketed norms
        are Gemma 2/3's sandwich norms, whose pre-MLP norm is `pre_feedforward_layernorm`.
        """
        cfg, sandwich, prefix, p = self.cfg, self.arch.sandwich_norms, LAYER.format(i=i), f"/model/layers.{i}"
        attn = attention(self.attention_parts, i, h, lengths, rotary)
        if sandwich:
            attn = self.rms_norm(f"{p}/post_attention_layernorm", attn, prefix + NORM["post_attention"])
        pre_mlp = "pre_feedforward" if sandwich else "post_attention"
        h, residual = self.skip_norm(f"{p}/{pre_mlp}_layernorm", attn, residual, prefix + NORM[pre_mlp])
        mlp = self.mlp(i, h)
        if sandwich:
            mlp = self.rms_norm(f"{p}/post_feedforward_layernorm", mlp, prefix + NORM["post_feedforward"])
        if i == cfg.num_layers - 1:
            return self.skip_norm("/model/norm", mlp, residual, FINAL_NORM)
        return self.skip_norm(f"/model/layers.{i + 1}/input_layernorm", mlp, residual,
                              LAYER.format(i=i + 1) + NORM["input"])

    # input_ids: [B, S], attention_mask: [B, T] -> seqlens_k int32 [B], total int32 [], query_seqlens int32 [B]
    def attention_lengths(self, ids: str, mask: str) -> AttentionLengths:
        """
        attention_mask -> ReduceSum(axis 1) -> Sub 1 -> Cast int32 --------------------> seqlens_k
        attention_mask -> Shape -> Gather[1] -> Cast int32 ---------------------------> total_sequence_length
        query_seqlens (default [-1]) -> Less 0 ? min(S, seqlens_k + 1) : query_seqlens -> query_seqlens
        """
        g, p = self.g, "/model/attn_mask"
        summed = g.op("ReduceSum", [mask, g.constant(f"{p}/axes", np.array([1], np.int64))], f"{p}/ReduceSum", keepdims=0)
        total_tokens = g.op("Cast", [summed], f"{p}/Cast_tokens", to=TensorProto.INT32)
        seqlens_k = g.op("Sub", [total_tokens, g.constant(f"{p}/one", np.int32(1))], f"{p}/Sub")
        mask_shape = g.op("Shape", [mask], f"{p}/Shape")
        total = g.op("Cast", [g.op("Gather", [mask_shape, g.constant(f"{p}/idx1", np.int64(1))], f"{p}/Gather", axis=0)],
                     f"{p}/Cast_total", to=TensorProto.INT32)
        if not self.opts.query_seqlens:
            return AttentionLengths(seqlens_k, total, "")
        qs_in = g.input(C.QUERY_SEQLENS, TensorProto.INT64, ["batch_size_or_1"])
        g.initializer(C.QUERY_SEQLENS, np.array([-1], dtype=np.int64))
        seq = g.op("Gather", [g.op("Shape", [ids], f"{p}/Shape_ids"), g.constant(f"{p}/idx1b", np.int64(1))],
                   f"{p}/Gather_seq", axis=0)
        derived = g.op("Min", [total_tokens, g.op("Cast", [seq], f"{p}/Cast_seq", to=TensorProto.INT32)], f"{p}/Min")
        is_default = g.op("Less", [qs_in, g.constant(f"{p}/zero64", np.int64(0))], f"{p}/Less")
        given = g.op("Cast", [qs_in], f"{p}/Cast_query_seqlens", to=TensorProto.INT32)
        query_seqlens = g.op("Where", [is_default, derived, given], f"{p}/Where")
        return AttentionLengths(seqlens_k, total, query_seqlens)

    def quantized_lm_head(self) -> quantize.BlockQuant | None:
        bits = self.opts.head_bits
        if not bits:
            return None
        src = LM_HEAD if not self.cfg.tie_embeddings else EMBED
        return quantized_part(self.w, src, (self.cfg.vocab_size, self.cfg.hidden_size), bits, self.opts,
                              exact_bits_only=self.opts.lm_head_bits is not None)

    # input_ids [B, S] -> hidden [B, S, H]
    def embedding(self, ids: str) -> str:
        """input_ids -> Gather (or GatherBlockQuantized from the tied int4 lm_head) [-> Mul sqrt(H), Gemma]"""
        g, cfg, p = self.g, self.cfg, "/model/embed_tokens"
        bq, table = self.quantized_table(p)
        if bq is not None:
            x = g.op("GatherBlockQuantized", [table[0], ids, *filter(None, table[1:])],
                     f"{p}/GatherBlockQuantized", MS_DOMAIN, bits=bq.bits, block_size=bq.block_size,
                     gather_axis=0, quantize_axis=1)
            if bq.offsets is not None:
                x = gather_offsets(g, p, x, ids, bq, self.opts)
        else:
            table = self.w.tensor(EMBED, (cfg.vocab_size, cfg.hidden_size)).astype(self.io)
            self.embed_table = g.initializer(EMBED, table)
            x = g.op("Gather", [self.embed_table, ids], f"{p}/Gather", axis=0)
        if self.arch.embed_scale:  # in the io dtype, as transformers rounds it
            x = g.op("Mul", [x, g.constant(f"{p}/scale", np.array(cfg.hidden_size ** 0.5, self.io))], f"{p}/Mul")
        return x

    def quantized_table(self, p: str) -> tuple[quantize.BlockQuant | None, list[str]]:
        """The embedding table as GatherBlockQuantized's (data, scales, zero points): the tied lm_head's blocks, or
        an untied table's own GGUF blocks converted exactly (a float table, or one a build re-rounds, stays float:
        the lookup is exact either way, and an untied fp32 table costs 4 bytes a weight)."""
        if self.cfg.tie_embeddings:
            bq = self.lm_head_quant
            return (bq, [self.tied_table(p, bq), *self.lm_head_weights[1:]]) if bq is not None else (None, [])
        blocks = None if self.opts.requantize or not self.opts.head_bits else self.w.blocks(EMBED)
        if blocks is None or blocks.kind not in gguf_blocks.CONVERTERS:
            return None, []
        bits = gguf_blocks.CONVERTERS[blocks.kind][1]
        bq = quantized_part(self.w, EMBED, (self.cfg.vocab_size, self.cfg.hidden_size), bits, self.opts)
        data, scales, zero_points = quantize.gather_block_quantized_inputs(bq)
        return bq, [self.g.initializer(f"{EMBED}.qweight", data),
                    self.g.initializer(f"{EMBED}.scales", scales.astype(self.io)),
                    self.g.initializer(f"{EMBED}.qzeros", zero_points) if zero_points is not None else ""]

    def tied_table(self, p: str, bq: quantize.BlockQuant) -> str:
        """The lm_head's packed codes as GatherBlockQuantized data [V, K*bits/8]: one copy on disk for both."""
        n, k = bq.shape
        if k % bq.block_size == 0:  # unpadded blocks: the same bytes, reshaped
            shape = self.g.constant(f"{p}/data_shape", np.array([n, k * bq.bits // 8], np.int64))
            return self.g.op("Reshape", [self.lm_head_weights[0], shape], f"{p}/Reshape_data")
        data, _, _ = quantize.gather_block_quantized_inputs(bq)
        return self.g.initializer("model.embed_tokens.qweight", data)

    def norm_weight(self, name: str, size: int) -> str:
        """An RMSNorm scale with the row's offset folded in (Gemma's 1 + w)."""
        w = self.w.tensor(name, (size,)) + np.float32(self.arch.norm_offset)
        return self.g.initializer(name, w.astype(self.io))

    def rms_norm(self, p: str, x: str, weight: str, size: int | None = None) -> str:
        """RMSNorm over the last axis (hidden, or head_dim for per-head norms)."""
        w = self.norm_weight(weight, size or self.cfg.hidden_size)
        return self.g.op("RMSNormalization", [x, w], f"{p}/RMSNormalization",
                         axis=-1, epsilon=self.cfg.rms_norm_eps, stash_type=1)

    def skip_norm(self, p: str, x: str, residual: str, weight: str) -> tuple[str, str]:
        """(x + residual) -> RMSNorm; returns (normed, the new residual sum)."""
        w = self.norm_weight(weight, self.cfg.hidden_size)
        out, _, _, total = self.g.node("SkipSimplifiedLayerNormalization", [x, residual, w],
                                       [f"{p}/output_0", "", "", f"{p}/output_3"],
                                       f"{p}/SkipSimplifiedLayerNormalization", MS_DOMAIN,
                                       epsilon=self.cfg.rms_norm_eps)
        return out, total

    # hidden [B, S, H] -> [B, S, H]
    def mlp(self, i: int, x: str) -> str:
        """x -> gate_proj -> activation --+--> Mul -> down_proj
           x -> up_proj ------------------+
        A LoRA build adds each row's adapter to gate, up and down (lora.py)."""
        g, cfg, prefix, p = self.g, self.cfg, LAYER.format(i=i), f"/model/layers.{i}/mlp"
        up_shape, down_shape = (cfg.intermediate_size, cfg.hidden_size), (cfg.hidden_size, cfg.intermediate_size)

        def proj(key: str, inp: str, shape) -> str:
            bias = [prefix + MLP[key] + ".bias"] if cfg.mlp_bias else None
            return linear(g, f"{p}/{key}_proj", inp, self.w, [prefix + MLP[key] + ".weight"], [shape],
                          self.opts, self.opts.bits, bias)

        gate, up = proj("gate", x, up_shape), proj("up", x, up_shape)
        if self.lora is not None:
            gate, up = self.lora.add(i, "gate", x, gate), self.lora.add(i, "up", x, up)
        act = g.op("Mul", [self.activation(f"{p}/act", gate), up], f"{p}/Mul")
        down = proj("down", act, down_shape)
        return self.lora.add(i, "down", act, down) if self.lora is not None else down

    def activation(self, p: str, x: str) -> str:
        """SiLU as x * Sigmoid(x); GELU (tanh or exact) as one Gelu node."""
        if self.cfg.hidden_act == "silu":
            return self.g.op("Mul", [x, self.g.op("Sigmoid", [x], f"{p}/Sigmoid")], f"{p}/Mul")
        return self.g.op("Gelu", [x], f"{p}/Gelu", approximate=GELU_APPROXIMATION[self.cfg.hidden_act])

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
        """x -> MatMul (or Gemm on the tied table, or MatMulNBits) [-> Div c -> Tanh -> Mul c, Gemma 2 soft-cap]"""
        g, cfg, p = self.g, self.cfg, "/lm_head"
        if self.lm_head_quant is not None:
            y = matmul_nbits(g, p, x, self.lm_head_quant, self.opts, weights=self.lm_head_weights)
        elif cfg.tie_embeddings:
            y = g.op("Gemm", [x, self.embed_table], f"{p}/Gemm", transB=1)
        else:
            w = self.w.tensor(LM_HEAD, (cfg.vocab_size, cfg.hidden_size))
            y = g.op("MatMul", [x, g.initializer("lm_head.weight", np.ascontiguousarray(w.T.astype(self.io)))],
                     f"{p}/MatMul")
        if not cfg.final_softcap:
            return y
        cap = g.constant(f"{p}/softcap/cap", np.array(cfg.final_softcap, self.io))
        tanh = g.op("Tanh", [g.op("Div", [y, cap], f"{p}/softcap/Div")], f"{p}/softcap/Tanh")
        return g.op("Mul", [tanh, cap], f"{p}/softcap/Mul")
