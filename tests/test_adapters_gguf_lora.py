"""llama.cpp GGUF LoRA files read into the same factors as the PEFT folder they were converted from.

tests/fixtures/lora-llama/ holds a real pair, made once with llama.cpp's own converter on a random PEFT adapter
(r 4, alpha 8, all seven linears) of the tiny llama-gqa2 model (its config is base_config.json):

    python vendor/llama.cpp/convert_lora_to_gguf.py --base <tiny llama folder> --outtype f32 \
        --outfile adapter-f32.gguf <PEFT folder>

Read back, its factors equal the PEFT folder's exactly (q/k rows un-permuted). The other files here are written
with gguf.GGUFWriter the way that script writes them: the type keys, adapter.lora.alpha, `<weight>.lora_a` [rank,
in] and `.lora_b` [out, rank] in numpy order, q/k rows of llama files permuted with llama.cpp's `permute`, and a
tensor too narrow for Q8_0's 32-value blocks (lora_b, [out, rank]) in F16, as the converter falls back.
"""
from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
from peft_adapters import base_config, peft_model

from llm_runtime.adapters import read_gguf_lora, read_peft_folder
from llm_runtime.errors import AdapterError

FIXTURE = Path(__file__).parent / "fixtures" / "lora-llama"
QT = gguf.GGMLQuantizationType
GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down"}


def permute(rows: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's LlamaModel.permute on the rows of a [rows, ...] array."""
    return rows.reshape(n_head, 2, rows.shape[0] // n_head // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def write_gguf_lora(path: Path, arch: str, alpha: float, pairs: dict[str, tuple[np.ndarray, np.ndarray]],
                    qtype: QT = QT.F32, heads: tuple[int, int] | None = None, extra: dict | None = None) -> Path:
    """pairs: HF module -> (lora_A [r, in], lora_B [out, r]) unscaled, as PEFT stores them."""
    w = gguf.GGUFWriter(path, arch)
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    tensors = dict(extra or {})
    for module, (a, b) in pairs.items():
        layer, proj = module.split(".")[2], module.split(".", 3)[3]
        if heads is not None and proj in ("self_attn.q_proj", "self_attn.k_proj"):
            b = permute(b, heads[0] if proj == "self_attn.q_proj" else heads[1])
        base = f"blk.{layer}.{GGUF_NAMES[proj]}.weight"
        tensors[base + ".lora_a"], tensors[base + ".lora_b"] = a, b
    for name, t in tensors.items():
        if qtype == QT.F32:
            w.add_tensor(name, t.astype(np.float32))
        else:  # as the converter does, a tensor whose rows do not fill whole blocks falls back to F16
            try:
                data, kind = gguf.quants.quantize(t.astype(np.float32), qtype), qtype
            except gguf.QuantError:
                data, kind = gguf.quants.quantize(t.astype(np.float32), QT.F16), QT.F16
            w.add_tensor(name, data, raw_dtype=kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def unscaled(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from safetensors.numpy import load_file

    t = load_file(str(folder / "adapter_model.safetensors"))
    mods = {k.removeprefix("base_model.model.").rsplit(".lora_", 1)[0] for k in t}
    return {m: (t[f"base_model.model.{m}.lora_A.weight"], t[f"base_model.model.{m}.lora_B.weight"]) for m in mods}


def test_real_converter_output_equals_the_peft_folder():
    cfg = base_config_from(FIXTURE / "base_config.json")
    ours, peft = read_gguf_lora(FIXTURE / "adapter-f32.gguf", "g", cfg), read_peft_folder(FIXTURE, "p")
    assert sorted(ours.pairs) == sorted(peft.pairs) and len(ours.pairs) == 14
    for m, pair in peft.pairs.items():
        np.testing.assert_array_equal(ours.pairs[m].a, pair.a)
        np.testing.assert_array_equal(ours.pairs[m].b, pair.b)
    assert ours.metadata["lora_alpha"] == 8.0 and ours.base_model_type is None  # "llama" covers Mistral too
    with pytest.raises(AdapterError, match="stores q/k rows permuted; reading it needs the base model's config"):
        read_gguf_lora(FIXTURE / "adapter-f32.gguf", "g")


def base_config_from(path: Path):
    import json

    from llm_runtime.model_builder.config import model_config

    return model_config(json.loads(path.read_text()))


@pytest.mark.parametrize("qtype, atol", [(QT.F32, 0), (QT.F16, 2e-3), (QT.BF16, 1.5e-2), (QT.Q8_0, 2e-2)])
@pytest.mark.parametrize("case, arch, heads", [("llama-gqa2", "llama", (4, 2)), ("qwen2-gqa", "qwen2", None)])
def test_written_files_give_the_peft_factors(case, arch, heads, qtype, atol, tiny_hf, tmp_path):
    """r 8, alpha 16 on q/k/v/down: llama.cpp's scale alpha / r equals PEFT's; llama's q/k rows come back in order."""
    hf = tiny_hf(case)
    peft_model(hf, r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "down_proj"]).save_pretrained(
        tmp_path / "peft")
    path = write_gguf_lora(tmp_path / "a.gguf", arch, 16.0, unscaled(tmp_path / "peft"), qtype, heads)
    ours, peft = read_gguf_lora(path, "g", base_config(hf)), read_peft_folder(tmp_path / "peft", "p")
    assert sorted(ours.pairs) == sorted(peft.pairs)
    for m, pair in peft.pairs.items():
        delta = ours.pairs[m].b @ ours.pairs[m].a
        np.testing.assert_allclose(delta, pair.b @ pair.a, atol=atol * max(1.0, np.abs(pair.b @ pair.a).max()),
                                   rtol=0, err_msg=m)
    assert ours.base_model_type == (None if arch == "llama" else "qwen2")


def test_alpha_zero_means_scale_one(tmp_path):
    a, b = np.ones((2, 64), np.float32), np.full((64, 2), 3.0, np.float32)
    path = write_gguf_lora(tmp_path / "a.gguf", "qwen2", 0.0, {"model.layers.0.self_attn.v_proj": (a, b)})
    np.testing.assert_array_equal(read_gguf_lora(path, "g").pairs["model.layers.0.self_attn.v_proj"].b, b)


V = {"model.layers.0.self_attn.v_proj": (np.ones((2, 64), np.float32), np.ones((32, 2), np.float32))}


@pytest.mark.parametrize("arch, extra, message", [
    ("qwen2", {"blk.0.attn_norm.weight": np.ones(64, np.float32)}, "is not a LoRA factor"),
    ("qwen2", {"token_embd.weight.lora_a": np.ones((2, 64), np.float32),
               "token_embd.weight.lora_b": np.ones((512, 2), np.float32)}, "an embedding or the output"),
    ("qwen2", {"blk.0.attn_q.weight.lora_a": np.ones((2, 64), np.float32)}, "has lora_a but not the other factor"),
    ("qwen2", {"blk.0.attn_q.weight.lora_a": np.ones((2, 64), np.float32),
               "blk.0.attn_q.weight.lora_b": np.ones((64, 3), np.float32)}, "expected \\[rank, in\\] and \\[out"),
    ("phi3", {}, "GGUF architecture 'phi3' is not supported"),
])
def test_refused_files(arch, extra, message, tmp_path):
    path = write_gguf_lora(tmp_path / "a.gguf", arch, 8.0, V, extra=extra)
    with pytest.raises(AdapterError, match=message):
        read_gguf_lora(path, "g")


def test_a_model_gguf_or_a_broken_file_is_refused(tmp_path):
    w = gguf.GGUFWriter(tmp_path / "model.gguf", "qwen2")
    w.add_tensor("blk.0.attn_q.weight", np.ones((64, 64), np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(AdapterError, match="not a GGUF LoRA adapter \\(general.type None"):
        read_gguf_lora(tmp_path / "model.gguf", "g")
    data = (FIXTURE / "adapter-f32.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])
    with pytest.raises(AdapterError, match="(truncated GGUF file|not a readable GGUF file): .*cut.gguf"):
        read_gguf_lora(tmp_path / "cut.gguf", "g")
