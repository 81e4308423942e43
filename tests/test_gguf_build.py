"""Builds from GGUF: tiny Llamas written here in F32 / F16 / Q8_0 / Q4_0, and the real SmolLM2 GGUF.

The GGUF files are written by test_gguf_source's `write_llama` (llama.cpp's layout, Q/K rows permuted).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import gguf
import numpy as np
import onnx
import pytest
import torch
from safetensors.numpy import save_file
from tokenizers import Tokenizer

from graph_driver import PlainDecoder
from llm_runtime.model_builder import quantize
from llm_runtime.model_builder.build import build
from llm_runtime.model_builder.gguf_source import GGUFSource
from llm_runtime.model_builder.precision import BuildOptions, Precision
from test_gguf_source import gpt2_metadata, tiny_llama, unpermute, write_llama
from test_quantized_builds import at_accuracy_level
from tiny_models import tiny_tokenizer

QT = gguf.GGMLQuantizationType
QTYPES = (QT.F32, QT.F16, QT.Q8_0, QT.Q4_0)
_rng = np.random.default_rng(1)
PROMPTS = [_rng.integers(3, 300, size=24).tolist() for _ in range(3)]
# (precision, GGUF block type) whose blocks the builder copies: MatMulNBits bits and from_gguf_* converter.
EXACT = {"int4": (QT.Q4_0, 4, quantize.from_gguf_q4_0), "int8": (QT.Q8_0, 8, quantize.from_gguf_q8_0)}


def prefill_logits(folder: Path, prompts=PROMPTS) -> np.ndarray:
    dec = PlainDecoder(folder)
    return np.concatenate([dec.step(np.array([p]), np.ones((1, len(p))), dec.empty_past(1))[0][0] for p in prompts])


class TinyModel:
    """One tiny Llama as a safetensors folder and as GGUF files of every block type, plus their builds."""

    def __init__(self, root: Path, tied: bool):
        bpe = tiny_tokenizer(300)
        self.root, self.tied = root, tied
        self.cfg, self.weights = tiny_llama(bpe.get_vocab_size(), tied)
        self.gguf, self.stored = {}, {}
        for q in QTYPES:
            self.gguf[q] = root / f"tiny-{q.name}.gguf"
            self.stored[q] = write_llama(self.gguf[q], self.cfg, self.weights, q,
                                         tokenizer=lambda w: gpt2_metadata(w, bpe))
        self.hf = self.safetensors_folder("hf", self.weights)
        self._built: dict[tuple, Path] = {}

    def safetensors_folder(self, name: str, weights: dict[str, np.ndarray]) -> Path:
        folder = self.root / name
        folder.mkdir()
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
        self.cfg.save_pretrained(folder)
        for file, content in GGUFSource(self.gguf[QT.F32]).tokenizer_files().files.items():
            (folder / file).write_text(json.dumps(content))
        return folder

    def build(self, source: Path, precision: str = "fp32") -> Path:
        key = (source, precision)
        if key not in self._built:
            out = self.root / f"build-{len(self._built)}"
            build(source, out, BuildOptions(precision=Precision(precision)), progress=False)
            self._built[key] = out
        return self._built[key]

    def raw_blocks(self, qtype: QT, names: list[str]) -> np.ndarray:
        """The stored GGUF blocks of `names` in Hugging Face row order, rows stacked (packed QKV)."""
        heads = {"q_proj": self.cfg.num_attention_heads, "k_proj": self.cfg.num_key_value_heads}
        parts = []
        for name in names:
            raw = self.stored[qtype][name]
            proj = name.split(".")[-2]
            parts.append(unpermute(raw, heads[proj]) if proj in heads else raw)
        return np.concatenate(parts, axis=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    made: dict[bool, TinyModel] = {}

    def make(tied: bool) -> TinyModel:
        if tied not in made:
            made[tied] = TinyModel(tmp_path_factory.mktemp(f"gguf-build-{tied}"), tied)
        return made[tied]
    return make


TIED = pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])


@TIED
def test_f32_gguf_builds_the_safetensors_model(tiny, tied):
    m = tiny(tied)
    got, ref = prefill_logits(m.build(m.gguf[QT.F32])), prefill_logits(m.build(m.hf))
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)  # measured: 0.0
    config = json.loads((m.build(m.gguf[QT.F32]) / "genai_config.json").read_text())["model"]
    assert config == json.loads((m.build(m.hf) / "genai_config.json").read_text())["model"]


@TIED
def test_f16_gguf_builds_the_f16_rounded_model(tiny, tied):
    m = tiny(tied)
    rounded = {k: v.astype(np.float16).astype(np.float32) if v.ndim == 2 else v for k, v in m.weights.items()}
    got = prefill_logits(m.build(m.gguf[QT.F16]))
    np.testing.assert_allclose(got, prefill_logits(m.build(m.safetensors_folder("hf-f16", rounded))),
                               atol=1e-5, rtol=0)  # measured: 0.0
    ref = prefill_logits(m.build(m.hf))
    assert np.abs(got - ref).max() < 2e-3  # fp16 rounding of the weights; measured 3.0e-4 (logit std ~0.8)
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 2e-3  # measured 3.6e-4


LINEARS = {  # MatMulNBits node -> the Hugging Face tensors whose rows it stacks, per layer
    "attn/qkv_proj": ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"],
    "attn/o_proj": ["self_attn.o_proj.weight"],
    "mlp/gate_proj": ["mlp.gate_proj.weight"],
    "mlp/up_proj": ["mlp.up_proj.weight"],
    "mlp/down_proj": ["mlp.down_proj.weight"],
}


@pytest.mark.parametrize("precision", sorted(EXACT))
@TIED
def test_quantized_gguf_blocks_are_copied_exactly(tiny, tied, precision):
    m = tiny(tied)
    qtype, bits, convert = EXACT[precision]
    folder = m.build(m.gguf[qtype], precision)
    model = onnx.load(str(folder / "model.onnx"))
    init = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    expected = {f"/model/layers.{i}/{key}/MatMulNBits": [f"model.layers.{i}.{n}" for n in names]
                for i in range(m.cfg.num_hidden_layers) for key, names in LINEARS.items()}
    expected["/lm_head/MatMulNBits"] = ["model.embed_tokens.weight" if tied else "lm_head.weight"]
    linears = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert sorted(n.name for n in linears) == sorted(expected)
    for node in linears:
        names = expected[node.name]
        raw = m.raw_blocks(qtype, names)
        bq = convert(raw, (raw.shape[0], m.weights[names[0]].shape[1]))
        # the converter's layout means the same numbers as gguf's own dequantizer
        np.testing.assert_array_equal(quantize.dequantize_blockwise(bq), gguf.quants.dequantize(raw, qtype))
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert (attrs["bits"], attrs["block_size"], attrs["N"], attrs["K"]) == (bits, 32, *bq.shape), node.name
        assert len(node.input) < 4 or node.input[3] == "", node.name  # implied zero point, as the GGUF block
        np.testing.assert_array_equal(init[node.input[1]], bq.q, err_msg=node.name)
        np.testing.assert_array_equal(init[node.input[2]], bq.scales, err_msg=node.name)
    gathers = [n for n in model.graph.node if n.op_type == "GatherBlockQuantized"]
    if tied:  # the embedding reads the same blocks as the lm_head, through a Reshape of its initializer
        head = next(n for n in linears if n.name == "/lm_head/MatMulNBits")
        reshape = next(n for n in model.graph.node if gathers[0].input[0] in n.output)
        assert reshape.op_type == "Reshape" and reshape.input[0] == head.input[1]
        assert gathers[0].input[2] == head.input[2]
    else:
        assert not gathers


@pytest.mark.parametrize("precision", sorted(EXACT))
@TIED
def test_quantized_gguf_build_computes_the_gguf_weights(tiny, tied, precision, tmp_path):
    """Against an fp32 build of the same GGUF (its weights dequantized): exact with float activations
    (accuracy_level 0); as built, int8 activations (accuracy_level 4) add a small error."""
    m = tiny(tied)
    qtype = EXACT[precision][0]
    folder, ref = m.build(m.gguf[qtype], precision), prefill_logits(m.build(m.gguf[qtype]))
    exact = prefill_logits(at_accuracy_level(folder, 0, tmp_path / "level0"))
    np.testing.assert_allclose(exact, ref, atol=1e-5, rtol=0)  # measured: 0.0
    got = prefill_logits(folder)
    assert np.abs(got - ref).max() < 0.02  # measured 0.0054-0.0066
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.02  # measured 0.0068-0.0073


# -- the real model -------------------------------------------------------------------------------------------
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def smol_prompt(smollm_transformers, smollm_build) -> list[int]:
    """The chat prompt rendered with the GGUF's template and tokenized by transformers; ours must agree."""
    _, tok = smollm_transformers
    text = tok.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n") and "What is the capital of France?" in text
    ids = tok(text).input_ids
    assert Tokenizer.from_file(str(smollm_build("fp32") / "tokenizer.json")).encode(text).ids == ids
    return ids


def test_smollm2_config_matches_transformers(smollm_transformers, smollm_build):
    ref = smollm_transformers[0].config
    ours = json.loads((smollm_build("fp32") / "config.json").read_text())
    assert np.float32(ours["rms_norm_eps"]) == np.float32(ref.rms_norm_eps)
    assert ours["rope_theta"] == ref.rope_parameters["rope_theta"] == 100000.0
    assert "rope_scaling" not in ours and ref.rope_parameters["rope_type"] == "default"
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "vocab_size", "tie_word_embeddings"):
        assert ours[key] == getattr(ref, key), key


def test_smollm2_fp32_build_matches_transformers(smollm_transformers, smollm_build, smol_prompt):
    """Measured on this prompt (37 tokens, logits up to |38|): ours vs transformers fp32 1.10e-4, ours vs
    transformers in float64 7.1e-5, transformers fp32 vs float64 9.3e-5. The 1.1e-4 is fp32 rounding over
    30 layers on both sides, not metadata: rope_theta and rms_norm_eps agree (test above)."""
    model, _ = smollm_transformers
    ids = torch.tensor([smol_prompt])
    with torch.no_grad():
        ref32 = model(ids).logits[0].float().numpy()
        ref64 = copy.deepcopy(model).double()(ids).logits[0].numpy()
    got = prefill_logits(smollm_build("fp32"), [smol_prompt])
    assert np.abs(got - ref64).max() < 1e-4
    assert np.abs(got - ref32).max() < 2e-4
    assert np.abs(got - ref64).max() <= np.abs(ref32 - ref64).max() * 1.5  # as close to exact as transformers is
    np.testing.assert_array_equal(got.argmax(-1), ref32.argmax(-1))


def test_smollm2_int4_build_answers(smollm_transformers, smollm_build, smol_prompt):
    _, tok = smollm_transformers
    manifest = json.loads((smollm_build("int4") / "llm_runtime.json").read_text())
    assert (manifest["precision"], manifest["provider"], manifest["block_size"]) == ("int4", "cpu", 32)
    answer = tok.decode(PlainDecoder(smollm_build("int4")).greedy(smol_prompt, 12))
    assert "Paris" in answer, answer
