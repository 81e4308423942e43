"""onnxruntime-genai runs each architecture's build (genai_config `model.type` from the table row) and its
greedy tokens agree with our plain driver and with transformers. llama's tiny builds are in test_interop."""
from __future__ import annotations

import onnxruntime_genai as og
import pytest
from arch_cases import CASES, prompt
from graph_driver import PlainDecoder
from test_architectures import reference, transformers_greedy
from test_interop import genai_greedy
from tiny_models import read_json

from llm_runtime.model_builder.architectures import architecture

ARCH_CASES = [c for c in CASES if not c.startswith("llama")]


@pytest.mark.parametrize("case", ARCH_CASES)
def test_genai_greedy_equals_ours_and_transformers(case, tiny_hf, tiny_build):
    folder, ids = tiny_build(case), prompt(case)[0]
    model_type = read_json(tiny_hf(case) / "config.json")["model_type"]
    assert read_json(folder / "genai_config.json")["model"]["type"] == architecture(model_type).genai_type
    out = genai_greedy(og.Model(str(folder)), ids, 32)
    assert len(out) == 32  # no eos on these prompts
    assert out == PlainDecoder(folder).greedy(ids, 32)
    assert out == transformers_greedy(reference(tiny_hf(case)), case, ids, 32)
