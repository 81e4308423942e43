"""onnxruntime-genai's .onnx_adapter both ways: ours -> .onnx_adapter -> ours is exact in either naming, files
written the way Olive writes them read into PEFT's factors, and onnxruntime-genai itself generates with an adapter
we exported exactly as transformers + PEFT does.

That model: onnxruntime-genai's builder with `adapter_path` bakes a PEFT adapter into the graph as initializers
(`model.layers.0.attn.q_proj.lora_A.MatMul.weight`, [in, r]; `...lora_B.MatMul.weight`, [r, out] times the scale);
`extract_adapter_inputs` then does what Olive's ExtractAdapters pass does to such a model (renames them
`...lora_A.weight`, makes them graph inputs with a dynamic `lora_r` dimension and zero-rank defaults), after which
the model runs with no adapter or with any .onnx_adapter of those names.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from peft_adapters import base_config, peft_model

from llm_runtime.adapters import read_adapter, read_onnx_adapter, read_peft_folder, write_onnx_adapter
from llm_runtime.adapters.genai_adapter import lora_inputs, parameter_name
from llm_runtime.errors import AdapterError

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PROMPT = [5, 17, 33, 100, 7, 250, 9, 11, 3, 42]
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def export(params: dict[str, np.ndarray], path: Path) -> Path:
    """An .onnx_adapter written as Olive's save_weights writes one."""
    out = ort.AdapterFormat()
    out.set_parameters({k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in params.items()})
    out.export_adapter(str(path))
    return path


def olive_convert(peft_folder: Path, dtype=np.float32) -> dict[str, np.ndarray]:
    """What `olive convert-adapters` makes of a PEFT folder: names with 'base_model.model.model' -> 'model',
    every weight transposed, lora_B times the scale."""
    import json

    from safetensors.numpy import load_file

    cfg = json.loads((peft_folder / "adapter_config.json").read_text())
    scale = cfg["lora_alpha"] / (math.sqrt(cfg["r"]) if cfg.get("use_rslora") else cfg["r"])
    out = {}
    for name, value in load_file(str(peft_folder / "adapter_model.safetensors")).items():
        w = value.astype(dtype).T.copy()
        out[name.replace("base_model.model.model", "model")] = w * dtype(scale) if "lora_B" in name else w
    return out


def assert_same(got, want, rtol=0.0, atol=0.0):
    assert sorted(got.pairs) == sorted(want.pairs)
    for m, pair in want.pairs.items():
        np.testing.assert_allclose(got.pairs[m].a, pair.a, rtol=rtol, atol=atol, err_msg=m)
        np.testing.assert_allclose(got.pairs[m].b, pair.b, rtol=rtol, atol=atol, err_msg=m)


@pytest.fixture(scope="module")
def llama_peft(tiny_hf, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("peft") / "adapter"
    peft_model(tiny_hf("llama-gqa2"), seed=3, r=4, lora_alpha=8, target_modules=ALL,
               rank_pattern={"v_proj": 2}).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("naming", ["hf", "genai"])
def test_round_trip_is_exact(naming, llama_peft, tmp_path):
    adapter = read_peft_folder(llama_peft, "a")
    path = write_onnx_adapter(adapter, tmp_path / "a.onnx_adapter", naming)
    params = {k: v.numpy() for k, v in ort.AdapterFormat.read_adapter(str(path)).get_parameters().items()}
    q = "model.layers.0.attn.q_proj" if naming == "genai" else "model.layers.0.self_attn.q_proj"
    assert params[f"{q}.lora_A.weight"].shape == (64, 4) and params[f"{q}.lora_B.weight"].shape == (4, 64)
    assert len(params) == 2 * len(adapter.pairs)
    back = read_adapter(path)
    assert back.name == "a"
    assert_same(back, adapter)


@pytest.mark.parametrize("dtype, rtol, atol", [(np.float32, 1e-6, 0.0), (np.float16, 1e-3, 1e-4)])
def test_olive_convert_adapters_output_reads_as_peft(dtype, rtol, atol, tiny_hf, tmp_path):
    """Olive scales B by the config's one r and alpha (it ignores rank_pattern), so this folder has none."""
    folder = tmp_path / "peft"
    peft_model(tiny_hf("llama-gqa2"), seed=4, r=8, lora_alpha=16, use_rslora=True,
               target_modules=["q_proj", "down_proj"]).save_pretrained(folder)
    path = export(olive_convert(folder, dtype), tmp_path / "olive.onnx_adapter")
    assert_same(read_onnx_adapter(path, "o"), read_peft_folder(folder, "p"), rtol, atol)


def test_phi3_fused_modules_as_olive_writes_them(tiny_hf, tmp_path):
    hf = tiny_hf("phi3-longrope")
    peft_model(hf, r=4, lora_alpha=8, target_modules=["qkv_proj", "gate_up_proj"]).save_pretrained(tmp_path / "p")
    path = export(olive_convert(tmp_path / "p"), tmp_path / "phi.onnx_adapter")
    assert "model.layers.0.self_attn.qkv_proj.lora_B.weight" in ort.AdapterFormat.read_adapter(
        str(path)).get_parameters()
    assert_same(read_onnx_adapter(path, "phi", base_config(hf)), read_peft_folder(tmp_path / "p", "p", base_config(hf)),
                rtol=1e-6)


A = np.ones((64, 2), np.float32)
B = np.ones((2, 64), np.float32)


@pytest.mark.parametrize("params, message", [
    ({"model.layers.0.self_attn.q_proj.lora_A.quant.weight": A}, "int4-quantized"),
    ({"model.layers.0.self_attn.q_proj.weight": A}, "is not a LoRA factor"),
    ({"model.layers.0.self_attn.q_proj.lora_A.weight": A}, "has lora_A but not the other factor"),
    ({"model.layers.0.self_attn.q_proj.lora_A.weight": A,
      "model.layers.0.self_attn.q_proj.lora_B.weight": np.ones((3, 64), np.float32)}, "their ranks differ"),
    ({"model.layers.0.self_attn.q_proj.lora_A.weight": A.astype(np.int32), "x.lora_B.weight": B},
     "int32 \\[64, 2\\]; LoRA factors are 2-D float32 or float16"),
])
def test_refused_parameters(params, message, tmp_path):
    with pytest.raises(AdapterError, match=message):
        read_onnx_adapter(export(params, tmp_path / "bad.onnx_adapter"), "bad")


def test_missing_or_corrupt_files(tmp_path):
    with pytest.raises(AdapterError, match="no such .onnx_adapter file"):
        read_onnx_adapter(tmp_path / "none.onnx_adapter", "x")
    (tmp_path / "junk.onnx_adapter").write_bytes(b"not flatbuffers at all")
    with pytest.raises(AdapterError, match="not a readable .onnx_adapter file"):
        read_onnx_adapter(tmp_path / "junk.onnx_adapter", "x")
    with pytest.raises(AdapterError, match="naming 'olive' is not one of hf, genai"):
        parameter_name("model.layers.0.self_attn.q_proj", "A", "olive")


# ---- onnxruntime-genai generating with an adapter we exported ----

BAKED = re.compile(r"(.+)\.lora_([AB])\.MatMul\.weight")


def extract_adapter_inputs(src: Path, dst: Path) -> None:
    """Olive's ExtractAdapters (make_inputs, dynamic_lora_r, optional_inputs) on an onnxruntime-genai build."""
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(src / "model.onnx")
    renames, initializers = {}, []
    for init in model.graph.initializer:
        m = BAKED.fullmatch(init.name)
        if m is None:
            initializers.append(init)
            continue
        new, rank_axis = f"{m[1]}.lora_{m[2]}.weight", 1 if m[2] == "A" else 0
        renames[init.name] = new
        dims = list(init.dims)
        shape = ["lora_r" if i == rank_axis else d for i, d in enumerate(dims)]
        model.graph.input.append(helper.make_tensor_value_info(new, TensorProto.FLOAT, shape))
        dims[rank_axis] = 0  # the default when no adapter is active: rank 0, no change
        initializers.append(numpy_helper.from_array(np.zeros(dims, np.float32), new))
    assert renames
    del model.graph.initializer[:]
    model.graph.initializer.extend(initializers)
    for node in model.graph.node:
        node.input[:] = [renames.get(i, i) for i in node.input]
    dst.mkdir()
    for f in ("genai_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / f, dst / f)
    onnx.save(model, dst / "model.onnx", save_as_external_data=True, location="model.onnx.data")


def genai_greedy(model, adapters, name: str | None, n: int) -> list[int]:
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(PROMPT) + n, min_length=len(PROMPT) + n, do_sample=False)
    generator = og.Generator(model, params)
    if name is not None:
        generator.set_active_adapter(adapters, name)
    generator.append_tokens(np.array(PROMPT, dtype=np.int32))
    out = []
    while not generator.is_done():
        generator.generate_next_token()
        out.append(int(generator.get_next_tokens()[0]))
    return out


def peft_greedy(model, n: int) -> list[int]:
    import torch

    with torch.no_grad():
        return model.generate(input_ids=torch.tensor([PROMPT]), do_sample=False, max_new_tokens=n,
                              min_new_tokens=n)[0, len(PROMPT):].tolist()


def test_genai_generates_with_our_adapters_as_peft_does(tiny_hf, llama_peft, tmp_path):
    """The model takes all seven linears at one rank; a second adapter (q and v only, ranks 2 and 6) is padded to
    it with zeros, and both adapters run in one onnxruntime-genai model."""
    import onnxruntime_genai as og

    hf = tiny_hf("llama-gqa2")
    subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o",
                    str(tmp_path / "baked"), "-p", "fp32", "-e", "cpu", "-c", str(tmp_path / "cache"),
                    "--extra_options", f"adapter_path={llama_peft}"],
                   check=True, capture_output=True, env={**os.environ, **OFFLINE})
    extract_adapter_inputs(tmp_path / "baked", tmp_path / "model")
    inputs = lora_inputs(tmp_path / "model" / "model.onnx")
    assert len(inputs) == 14 and inputs["model.layers.1.self_attn.k_proj"] == (64, 32)
    peft_model(hf, seed=5, r=6, lora_alpha=3, target_modules=["q_proj", "v_proj"],
               rank_pattern={"v_proj": 2}).save_pretrained(tmp_path / "qv")
    for name, folder in (("all", llama_peft), ("qv", tmp_path / "qv")):
        write_onnx_adapter(read_adapter(folder, name), tmp_path / f"{name}.onnx_adapter", "genai", pad_to=inputs)
    model = og.Model(str(tmp_path / "model"))
    adapters = og.Adapters(model)
    for name in ("all", "qv"):
        adapters.load(str(tmp_path / f"{name}.onnx_adapter"), name)
    reference = peft_model(hf, adapter=llama_peft)
    with reference.disable_adapter():
        base = peft_greedy(reference, 24)
    for name, folder in (("all", llama_peft), ("qv", tmp_path / "qv")):
        want = peft_greedy(peft_model(hf, adapter=folder), 24)
        assert want != base
        assert genai_greedy(model, adapters, name, 24) == want, name
    assert genai_greedy(model, adapters, None, 24) == base


def test_padding_refuses_a_module_the_model_lacks(llama_peft, tmp_path):
    adapter = read_adapter(llama_peft, "a")
    fewer = {m: (p.a.shape[1], p.b.shape[0]) for m, p in adapter.pairs.items() if "mlp" not in m}
    with pytest.raises(AdapterError, match="adapts model.layers.0.mlp.down_proj, for which the model takes no LoRA"):
        write_onnx_adapter(adapter, tmp_path / "a.onnx_adapter", pad_to=fewer)
    wrong = {**{m: (p.a.shape[1], p.b.shape[0]) for m, p in adapter.pairs.items()},
             "model.layers.0.self_attn.k_proj": (64, 64)}
    with pytest.raises(AdapterError, match="k_proj has in 64 and out 32; the model's LoRA inputs have in 64 and out"):
        write_onnx_adapter(adapter, tmp_path / "a.onnx_adapter", pad_to=wrong)
