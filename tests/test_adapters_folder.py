"""Our adapter folder is a PEFT folder with the scale folded into B: PEFT itself loads it and gives the logits the
original adapter gives, whatever the ranks, alphas and rsLoRA were; read back, it is the same adapter."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from peft_adapters import logits, peft_model
from tiny_models import hf_logits

from llm_runtime.adapters import read_adapter, read_folder, read_peft_folder, write_folder
from llm_runtime.errors import AdapterError

IDS = [5, 17, 33, 100, 7, 250, 9, 11, 3, 42]
CASES = {
    "rslora-patterns": dict(r=8, lora_alpha=12, use_rslora=True, target_modules="all-linear",
                            rank_pattern={"q_proj": 2, "down_proj": 5}, alpha_pattern={"v_proj": 40}),
    "qv": dict(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_peft_loads_our_folder_with_the_same_logits(case, tiny_hf, tmp_path):
    hf = tiny_hf("llama-gqa2")
    original = peft_model(hf, **CASES[case])
    original.save_pretrained(tmp_path / "peft")
    adapter = read_peft_folder(tmp_path / "peft", case)
    write_folder(replace(adapter, base_model_type="llama"), tmp_path / "ours")
    reloaded = peft_model(hf, adapter=tmp_path / "ours")
    base = hf_logits(hf, np.array([IDS]))[0]
    want, got = logits(original, IDS), logits(reloaded, IDS)
    assert np.abs(want - base).max() > 0.1  # the adapter changes the logits
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_round_trip_is_exact_and_keeps_name_and_model_type(tiny_hf, tmp_path):
    hf = tiny_hf("llama-gqa2")
    peft_model(hf, **CASES["rslora-patterns"]).save_pretrained(tmp_path / "peft")
    adapter = replace(read_peft_folder(tmp_path / "peft", "mine"), base_model_type="llama")
    write_folder(adapter, tmp_path / "ours")
    back = read_adapter(tmp_path / "ours")
    assert (back.name, back.base_model_type) == ("mine", "llama")
    assert sorted(back.pairs) == sorted(adapter.pairs)
    for m, pair in adapter.pairs.items():
        np.testing.assert_array_equal(back.pairs[m].a, pair.a)
        np.testing.assert_array_equal(back.pairs[m].b, pair.b)
    cfg = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    assert cfg["r"] == cfg["lora_alpha"] == 8 and not cfg["use_rslora"]
    assert cfg["rank_pattern"] == cfg["alpha_pattern"] and len(cfg["rank_pattern"]) == 4  # q (r 2), down (r 5) x 2
    assert read_folder(tmp_path / "ours", "renamed").name == "renamed"


def test_a_newer_manifest_format_is_refused(tiny_hf, tmp_path):
    peft_model(tiny_hf("llama-gqa2"), r=2, target_modules=["q_proj"]).save_pretrained(tmp_path / "peft")
    write_folder(read_peft_folder(tmp_path / "peft", "x"), tmp_path / "ours")
    (tmp_path / "ours" / "llm_runtime_adapter.json").write_text(json.dumps({"format": 2}))
    with pytest.raises(AdapterError, match="has format 2; this version reads 1"):
        read_folder(tmp_path / "ours")
