"""int4 builds of every non-llama architecture case (llama's are in test_quantized_builds).

Two checks per case, as test_quantized_builds makes them for llama:
- accuracy: prefill logits against the fp32 build, within bounds measured here (quantization noise on random
  weights, so loose);
- exactness: with float activations (accuracy_level 0) the int4 graph computes the fp32 model of its dequantized
  weights, so quantization changes nothing in the graph's structure (fused Phi-3 tensors, Q/K norms, tied and
  scaled Gemma embeddings read through GatherBlockQuantized).
"""
from __future__ import annotations

import numpy as np
import pytest
from arch_cases import CASES
from test_quantized_builds import at_accuracy_level, fake_quantized, prefill_logits, rel_error, top1

from llm_runtime.model_builder.build import build
from llm_runtime.model_builder.precision import BuildOptions, Precision

ARCH_CASES = [c for c in CASES if not c.startswith("llama")]
# Measured on test_quantized_builds' prompts (4 x 32 random tokens), against fp32: relative error 0.10-0.40
# (gemma3-pattern2 the largest), top-1 agreement 0.45-1.0. The llama cases measure 0.09-0.30 / 0.56-0.97.
MAX_REL, MIN_TOP1 = 0.45, 0.40


@pytest.mark.parametrize("case", ARCH_CASES)
def test_int4_accuracy_against_fp32(case, tiny_build):
    ref, got = prefill_logits(tiny_build(case)), prefill_logits(tiny_build(case, "int4"))
    assert rel_error(got, ref) <= MAX_REL
    assert top1(got, ref) >= MIN_TOP1


@pytest.mark.parametrize("case", ARCH_CASES)
def test_int4_graph_computes_the_dequantized_weights(case, tiny_hf, tiny_build, tmp_path):
    opts = BuildOptions(precision=Precision.INT4)
    reference_folder = tmp_path / "fq-build"
    build(fake_quantized(tiny_hf(case), opts, tmp_path / "fq"), reference_folder,
          BuildOptions(precision=Precision.FP32), progress=False)
    exact = prefill_logits(at_accuracy_level(tiny_build(case, "int4"), 0, tmp_path / "level0"))
    np.testing.assert_allclose(exact, prefill_logits(reference_folder), atol=1e-4, rtol=0)
