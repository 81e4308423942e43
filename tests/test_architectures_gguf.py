"""GGUF input for qwen2, qwen3 and gemma3: the tiny random cases written the way llama.cpp's converter writes them
(its tensor names, no Q/K permutation, Gemma's norms stored as 1 + w), built, and checked against transformers
on the Hugging Face folder they came from."""
from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from arch_cases import prompt
from graph_driver import PlainDecoder
from safetensors.numpy import load_file
from test_architectures import ATOL, reference
from test_gguf_source import gpt2_metadata
from tiny_models import read_json, tiny_tokenizer

from llm_runtime.model_builder.build import build
from llm_runtime.model_builder.precision import BuildOptions, Precision

QT = gguf.GGMLQuantizationType
LAYER_NAMES = {  # llama.cpp's convert_hf_to_gguf.py names, by Hugging Face suffix
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "post_attention_layernorm": "ffn_norm",
}
GEMMA3_NAMES = {"post_attention_layernorm": "post_attention_norm", "pre_feedforward_layernorm": "ffn_norm",
                "post_feedforward_layernorm": "post_ffw_norm"}
TOP_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
GGUF_ARCH = {"qwen2": "qwen2", "qwen3": "qwen3", "gemma3_text": "gemma3"}
GGUF_CASES = ["qwen2-gqa", "qwen3-headdim32", "qwen3-bias-tied", "gemma3-pattern2"]  # llama.cpp: no Qwen window


def gguf_name(hf: str, arch: str) -> str:
    if hf in TOP_NAMES:
        return TOP_NAMES[hf]
    _, _, i, rest = hf.split(".", 3)
    module, kind = rest.rsplit(".", 1)
    names = {**LAYER_NAMES, **(GEMMA3_NAMES if arch == "gemma3" else {})}
    return f"blk.{i}.{names[module]}.{kind}"


def write_gguf(hf: Path, path: Path, qtype: QT = QT.F32) -> Path:
    """The safetensors folder `hf` as llama.cpp would convert it (rope scaling and window metadata included)."""
    cfg, arch = read_json(hf / "config.json"), GGUF_ARCH[read_json(hf / "config.json")["model_type"]]
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_key_length(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])
    rope = cfg["rope_parameters"].get("full_attention", cfg["rope_parameters"])
    w.add_rope_freq_base(rope["rope_theta"])
    if rope["rope_type"] == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope["factor"])
    if arch == "gemma3":
        w.add_sliding_window(cfg["sliding_window"])
        w.add_sliding_window_pattern(cfg["sliding_window_pattern"])
    gpt2_metadata(w, tiny_tokenizer(400))
    for name, arr in load_file(hf / "model.safetensors").items():
        if arch == "gemma3" and name.endswith("norm.weight"):
            arr = arr + 1  # llama.cpp stores Gemma's (1 + w)
        if arr.ndim == 2 and qtype != QT.F32:
            w.add_tensor(gguf_name(name, arch), gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(gguf_name(name, arch), arr.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("case", GGUF_CASES)
def test_gguf_build_matches_transformers(case, tiny_hf, tmp_path):
    hf = tiny_hf(case)
    out = tmp_path / "model"
    build(write_gguf(hf, tmp_path / f"{case}.gguf"), out, BuildOptions(precision=Precision.FP32), progress=False)
    ids, model = prompt(case)[0], reference(hf)
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits.numpy()
    dec = PlainDecoder(out)
    logits, _ = dec.step(np.array([ids]), np.ones((1, len(ids))), dec.empty_past(1))
    np.testing.assert_allclose(logits, ref, atol=ATOL, rtol=0)
    assert read_json(out / "config.json")["model_type"] == read_json(hf / "config.json")["model_type"]


@pytest.mark.parametrize("case", GGUF_CASES)
def test_gguf_q4_0_blocks_build_int4(case, tiny_hf, tmp_path):
    """Q4_0 blocks copied into MatMulNBits: the int4 build of the GGUF equals its own fp32 build (dequantized)."""
    source = write_gguf(tiny_hf(case), tmp_path / f"{case}-q4_0.gguf", QT.Q4_0)
    folders = {p: tmp_path / p for p in ("fp32", "int4")}
    for p, folder in folders.items():
        build(source, folder, BuildOptions(precision=Precision(p)), progress=False)
    ids = prompt(case)[0]
    logits = {p: PlainDecoder(f).step(np.array([ids]), np.ones((1, len(ids))), PlainDecoder(f).empty_past(1))[0]
              for p, f in folders.items()}
    rel = np.linalg.norm(logits["int4"] - logits["fp32"]) / np.linalg.norm(logits["fp32"])
    assert rel < 0.05  # only accuracy_level 4's int8 activations differ; measured 0.006-0.022
