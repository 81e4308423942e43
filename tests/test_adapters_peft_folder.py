"""PEFT folders read into factors that reproduce PEFT's own delta on every adapted linear (several ranks, alphas,
rsLoRA, per-module patterns, target sets; Phi-3's fused modules split), and everything PEFT would add beyond a
low-rank delta refused with a message that says what."""
from __future__ import annotations

import json

import numpy as np
import pytest
from peft_adapters import base_config, peft_deltas, peft_model

from llm_runtime.adapters import read_peft_folder
from llm_runtime.errors import AdapterError

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CONFIGS = {
    "r4-alpha8-all": dict(r=4, lora_alpha=8, target_modules=ALL),
    "r8-alpha16-rslora-qv": dict(r=8, lora_alpha=16, use_rslora=True, target_modules=["q_proj", "v_proj"]),
    "patterns": dict(r=4, lora_alpha=4, target_modules=ALL, rank_pattern={"q_proj": 2, "layers.1.mlp.down_proj": 6},
                     alpha_pattern={"k_proj": 32, r"model\.layers\.0\.self_attn\.o_proj": 1}),
    "regex-targets": dict(r=3, lora_alpha=5, target_modules=r".*\.layers\.1\..*(up|o)_proj"),
    "all-linear-rslora": dict(r=6, lora_alpha=3, use_rslora=True, target_modules="all-linear"),
}


def check_deltas(adapter, model, fused: dict[str, tuple[str, ...]] | None = None) -> int:
    """Every PEFT LoRA linear's delta equals x @ A.T @ B.T (parts stacked for a fused one); returns how many."""
    fused = fused or {}
    for module, (x, delta) in peft_deltas(model).items():
        short = module.rsplit(".", 1)[-1]
        parts = [module.removesuffix(short) + p for p in fused.get(short, (short,))]
        ours = np.concatenate([x @ adapter.pairs[p].a.T @ adapter.pairs[p].b.T for p in parts], axis=1)
        np.testing.assert_allclose(ours, delta, atol=1e-5, rtol=0, err_msg=module)
    return len(peft_deltas(model))


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_factors_reproduce_peft_deltas(case, tiny_hf, tmp_path):
    model = peft_model(tiny_hf("llama-gqa2"), **CONFIGS[case])
    model.save_pretrained(tmp_path)
    adapter = read_peft_folder(tmp_path, case)
    assert check_deltas(adapter, model) == len(adapter.pairs) > 0
    assert all(p.a.dtype == p.b.dtype == np.float32 for p in adapter.pairs.values())
    assert all(m.startswith("model.layers.") and not m.endswith(".weight") for m in adapter.pairs)


def test_patterns_set_each_modules_rank(tiny_hf, tmp_path):
    peft_model(tiny_hf("llama-gqa2"), **CONFIGS["patterns"]).save_pretrained(tmp_path)
    pairs = read_peft_folder(tmp_path, "p").pairs
    assert pairs["model.layers.0.self_attn.q_proj"].rank == 2 and pairs["model.layers.1.mlp.down_proj"].rank == 6
    assert pairs["model.layers.0.mlp.down_proj"].rank == 4


def test_phi3_fused_modules_split_into_parts(tiny_hf, tmp_path):
    """qkv_proj's B splits into q [64], k [32], v [32] rows (4 heads, 2 kv heads), gate_up_proj's into halves."""
    hf = tiny_hf("phi3-longrope")
    model = peft_model(hf, r=4, lora_alpha=8, target_modules=["qkv_proj", "gate_up_proj", "o_proj", "down_proj"])
    model.save_pretrained(tmp_path)
    adapter = read_peft_folder(tmp_path, "phi", base_config(hf))
    assert adapter.pairs["model.layers.0.self_attn.k_proj"].b.shape == (32, 4)
    fused = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
    check_deltas(adapter, model, fused)
    assert len(adapter.pairs) == 2 * 7
    with pytest.raises(AdapterError, match="fused; reading it needs the base model's config"):
        read_peft_folder(tmp_path, "phi")


@pytest.fixture
def saved(tiny_hf, tmp_path):
    """A PEFT folder on the tiny llama whose config or tensors a test then spoils."""
    peft_model(tiny_hf("llama-gqa2"), r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]).save_pretrained(tmp_path)
    return tmp_path


def edit_config(folder, **changes):
    cfg = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**cfg, **changes}))


@pytest.mark.parametrize("changes, message", [
    (dict(use_dora=True), "use_dora is set \\(DoRA"),
    (dict(bias="lora_only"), "bias 'lora_only' trains biases of the base"),
    (dict(modules_to_save=["lm_head"]), "modules_to_save is set"),
    (dict(lora_bias=True), "lora_bias is set"),
    (dict(peft_type="IA3"), "peft_type 'IA3' is not LoRA"),
    (dict(r=8), "expected rank 8"),
    (dict(target_modules=["k_proj"]), "which target_modules \\['k_proj'\\] does not name"),
])
def test_refused_configs(saved, changes, message):
    edit_config(saved, **changes)
    with pytest.raises(AdapterError, match=message):
        read_peft_folder(saved, "x")


def rewrite_tensors(folder, change):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(folder / "adapter_model.safetensors"))
    save_file(change(tensors), str(folder / "adapter_model.safetensors"))


@pytest.mark.parametrize("change, message", [
    (lambda t: {**t, "base_model.model.model.embed_tokens.lora_embedding_A": np.zeros((4, 512), np.float32)},
     "targets an embedding"),
    (lambda t: {**t, "base_model.model.lm_head.lora_A.weight": np.zeros((4, 64), np.float32),
                "base_model.model.lm_head.lora_B.weight": np.zeros((512, 4), np.float32)}, "the lm_head"),
    (lambda t: {**t, "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector": np.ones(64, np.float32)},
     "DoRA magnitude vector"),
    (lambda t: {**t, "base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias": np.ones(64, np.float32)},
     "is a bias on lora_B"),
    (lambda t: {**t, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight": np.ones((4, 64),
                                                                                                     np.float32)},
     "is not a LoRA factor"),
    (lambda t: {k: v for k, v in t.items() if k != "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"},
     "model.layers.1.self_attn.v_proj has lora_A but not the other factor"),
    (lambda t: {}, "holds no LoRA factors"),
])
def test_refused_tensors(saved, change, message):
    rewrite_tensors(saved, change)
    with pytest.raises(AdapterError, match=message):
        read_peft_folder(saved, "x")


def test_pickled_weights_and_missing_files_are_refused(saved):
    (saved / "adapter_model.safetensors").rename(saved / "adapter_model.bin")
    with pytest.raises(AdapterError, match="only adapter_model.bin \\(a pickle"):
        read_peft_folder(saved, "x")
    (saved / "adapter_model.bin").unlink()
    with pytest.raises(AdapterError, match="no adapter_model.safetensors"):
        read_peft_folder(saved, "x")
    (saved / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterError, match="adapter_config.json: not a readable JSON file"):
        read_peft_folder(saved, "x")


def test_corrupt_safetensors_is_one_adapter_error(saved):
    (saved / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(AdapterError, match="corrupt safetensors header"):
        read_peft_folder(saved, "x")
