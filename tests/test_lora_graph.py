"""A LoRA build's graph against transformers + PEFT: one call mixing base rows and rows of three adapters (ranks,
targets, alphas and rsLoRA differing) gives each row its own logits, prompt and decode; the plain graph beside it
is the build without LoRA, node for node."""
import numpy as np
import onnx
import pytest
import torch
from lora_reference import AdapterSpec, lora_adapter, peft_logits, peft_model
from transformers import AutoModelForCausalLM

from llm_runtime import LLM
from llm_runtime.adapters import LoraConfig
from llm_runtime.graph.runner import Step
from llm_runtime.kv_cache import KVCache
from llm_runtime.model_builder.contract import LORA_TARGETS

ALL = LORA_TARGETS
SPECS = [
    AdapterSpec("attn-r4", 4, 8.0, ("q_proj", "k_proj", "v_proj", "o_proj"), seed=1),
    AdapterSpec("mlp-r16-rs", 16, 4.0, ("gate_proj", "up_proj", "down_proj"), rslora=True, seed=2),
    AdapterSpec("qv-r8", 8, 16.0, ("q_proj", "v_proj", "down_proj"), seed=3),
]
PROMPTS = [[5, 17, 33, 100, 7, 250, 9, 11], [3, 42, 61, 8, 140], [27, 300, 19, 4, 77, 12, 200], [1, 2, 3, 4, 5, 6]]
ROW_ADAPTERS = [None, "attn-r4", "mlp-r16-rs", "qv-r8"]


@pytest.fixture(scope="module")
def reference(tiny_hf):
    def make(case: str):
        base = AutoModelForCausalLM.from_pretrained(tiny_hf(case), dtype=torch.float32).eval()
        model = peft_model(base, SPECS)
        return model, {s.name: lora_adapter(model, s) for s in SPECS}
    return make


def mixed_call(llm: LLM, prompts, slots, next_tokens=None):
    """Prompts right-padded into one call over cache slots 0..3, logits of every position; then, with
    `next_tokens`, one decode call of a token per row. Returns [per-row logits [S_i, V]] for each call."""
    c = llm.folder.contract
    cache = KVCache(c.num_layers, c.num_kv_heads, c.head_dim, np.dtype(c.kv_dtype), slots=len(prompts), capacity=64)
    width = max(map(len, prompts))
    ids = np.zeros((len(prompts), width), np.int64)
    for row, p in enumerate(prompts):
        ids[row, :len(p)] = p
    lens = np.array([len(p) for p in prompts])
    at = np.concatenate([row * width + np.arange(n) for row, n in enumerate(lens)])
    index = np.array(slots, np.int64)
    logits = llm.runner.run(Step(ids, lens, lens, at, 0, index), cache).copy()
    split = np.split(logits, np.cumsum(lens)[:-1])
    if next_tokens is None:
        return split, None
    step = Step(np.array(next_tokens, np.int64).reshape(-1, 1), lens + 1, np.ones(len(prompts), np.int64),
                np.arange(len(prompts)), 0, index)
    return split, llm.runner.run(step, cache).copy()


@pytest.mark.parametrize("case", ["llama-gqa2", "qwen2-gqa", "gemma-mqa"])
def test_a_mixed_batch_matches_peft_row_by_row(case, tiny_build, reference):
    model, adapters = reference(case)
    llm = LLM(tiny_build(case, lora_targets=ALL), adapters=adapters)
    slots = [0 if name is None else llm.adapters.acquire(name).slot for name in ROW_ADAPTERS]
    assert sorted(slots[1:]) == [1, 2, 3]
    nxt = [7, 8, 9, 10]
    prompt_logits, decode_logits = mixed_call(llm, PROMPTS, slots, nxt)
    for row, (prompt, name) in enumerate(zip(PROMPTS, ROW_ADAPTERS)):
        ref = peft_logits(model, name, prompt + [nxt[row]])
        np.testing.assert_allclose(prompt_logits[row], ref[:-1], atol=1e-4, rtol=0)
        np.testing.assert_allclose(decode_logits[row], ref[-1], atol=1e-4, rtol=0)
    # the adapters change the logits: the comparison above could not pass with the base model's
    base = peft_logits(model, None, PROMPTS[1])
    assert np.abs(base - prompt_logits[1]).max() > 1e-2


def test_a_base_only_call_runs_the_plain_graph_and_matches_peft_disabled(tiny_build, reference):
    model, adapters = reference("llama-gqa2")
    llm = LLM(tiny_build("llama-gqa2", lora_targets=ALL), adapters=adapters)
    logits, _ = mixed_call(llm, PROMPTS[:2], [0, 0])
    assert llm.runner.binding is llm.runner._plain.binding
    for row in range(2):
        np.testing.assert_allclose(logits[row], peft_logits(model, None, PROMPTS[row]), atol=1e-4, rtol=0)


def test_the_plain_graph_is_the_build_without_lora(tiny_build):
    lora_folder, plain_folder = tiny_build("llama-gqa2", lora_targets=ALL), tiny_build("llama-gqa2")
    plain = onnx.load(str(plain_folder / "model.onnx"), load_external_data=False).graph
    derived = onnx.load(str(lora_folder / "model.onnx"), load_external_data=False).graph
    assert [(n.op_type, list(n.input), list(n.output)) for n in derived.node] == \
        [(n.op_type, list(n.input), list(n.output)) for n in plain.node]
    assert [i.name for i in derived.input] == [i.name for i in plain.input]
    assert [t.name for t in derived.initializer] == [t.name for t in plain.initializer]
    lora = onnx.load(str(lora_folder / "model.lora.onnx"), load_external_data=False).graph
    layers = 2
    # per layer: qkv, o and down sites (MatMul, Mul, MatMul, Add), gate_up (the same, Split, two Adds); 3 masks
    assert len(lora.node) - len(plain.node) == layers * (3 * 4 + 6) + 3 * 3


def test_targets_a_build_lacks_are_refused_with_the_module_named(tiny_build, reference):
    from llm_runtime.adapters.slots import AdapterMismatchError

    _, adapters = reference("llama-gqa2")
    llm = LLM(tiny_build("llama-gqa2", lora_targets=("q", "v")), lora=LoraConfig(targets=("q", "v")))
    with pytest.raises(AdapterMismatchError, match=r"model.layers.0.self_attn.k_proj.*LoRA targets: q_proj, v_proj"):
        llm.load_adapter("attn", adapters["attn-r4"])
    assert llm.adapter_names() == []
