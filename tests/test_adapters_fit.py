"""check_fits: an adapter that does not fit its base (another model type, a module the base lacks, other sizes)
is one AdapterError naming the first problem with both shapes; one that fits passes."""
from __future__ import annotations

import numpy as np
import pytest
from peft_adapters import base_config

from llm_runtime.adapters import LoraAdapter, LoraPair, check_fits, linear_shapes
from llm_runtime.errors import AdapterError


def pair(d_in: int, d_out: int, r: int = 2) -> LoraPair:
    return LoraPair(np.zeros((r, d_in), np.float32), np.zeros((d_out, r), np.float32))


@pytest.fixture
def shapes(tiny_hf):
    """llama-gqa2: hidden 64, 4 heads and 2 kv heads of 16, intermediate 128, 2 layers."""
    return linear_shapes(base_config(tiny_hf("llama-gqa2")))


def test_linear_shapes_lists_every_layers_seven_linears(shapes):
    assert len(shapes) == 2 * 7
    assert shapes["model.layers.1.self_attn.k_proj"] == (64, 32)
    assert shapes["model.layers.0.self_attn.o_proj"] == (64, 64)
    assert shapes["model.layers.0.mlp.down_proj"] == (128, 64)


def test_a_fitting_adapter_passes(shapes):
    adapter = LoraAdapter("a", {"model.layers.1.self_attn.k_proj": pair(64, 32), "model.layers.0.mlp.up_proj":
                                pair(64, 128, 8)}, base_model_type="llama")
    check_fits(adapter, "llama", shapes)


@pytest.mark.parametrize("pairs, model_type, message", [
    ({"model.layers.0.self_attn.q_proj": pair(64, 64)}, "qwen2",
     "adapter 'a' \\(test.gguf\\) is for a llama model; the base is qwen2"),
    ({"model.layers.2.self_attn.q_proj": pair(64, 64)}, "llama",
     "adapts model.layers.2.self_attn.q_proj, which the base \\(llama\\) has no linear for"),
    ({"model.layers.0.self_attn.k_proj": pair(64, 64)}, "llama",
     "model.layers.0.self_attn.k_proj has A \\[2, 64\\] and B \\[64, 2\\], giving in 64 and out 64; the base "
     "linear has in 64 and out 32"),
    ({"model.layers.0.mlp.down_proj": pair(64, 64)}, "llama", "giving in 64 and out 64; the base linear has in 128"),
    ({"model.layers.0.mlp.up_proj": LoraPair(np.zeros((2, 64), np.float32), np.zeros((128, 3), np.float32))}, "llama",
     "has A \\[2, 64\\] and B \\[128, 3\\]"),
])
def test_misfits_name_the_module_and_both_shapes(shapes, pairs, model_type, message):
    with pytest.raises(AdapterError, match=message):
        check_fits(LoraAdapter("a", pairs, base_model_type="llama", source="test.gguf"), model_type, shapes)


def test_an_adapter_that_names_no_model_type_is_checked_by_shapes_alone(shapes):
    check_fits(LoraAdapter("a", {"model.layers.0.self_attn.v_proj": pair(64, 32)}), "mistral", shapes)
