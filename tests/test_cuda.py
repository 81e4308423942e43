"""The CUDA execution provider, on a machine whose onnxruntime has it (skipped elsewhere): the KV cache lives in
device memory and is bound in place, the heavy ops run on the device, and greedy tokens agree with transformers
up to fp16 near-ties. `LLM_RUNTIME_TEST_PROVIDER=cpu` runs the same checks on the CPU (a dry run of this file).
"""
import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from transformers import AutoModelForCausalLM

from llm_runtime import LLM, SamplingParams
from llm_runtime.engine import EngineConfig
from llm_runtime.graph.providers import CAPABILITIES, Provider
from llm_runtime.graph.runner import ModelRunner, Step, decode_inputs, prefill_inputs
from llm_runtime.graph.session import SessionConfig, make_session
from llm_runtime.kv_cache import KVCache
from llm_runtime.models.folder import ModelFolder
from llm_runtime.models.resolver import ORT_HAS_QUERY_SEQLENS

PROVIDER = Provider(os.environ.get("LLM_RUNTIME_TEST_PROVIDER", "cuda"))
ORT_NAME = CAPABILITIES[PROVIDER].ort_name
pytestmark = pytest.mark.skipif(ORT_NAME not in ort.get_available_providers(), reason=f"no {ORT_NAME} here")

DEVICE = CAPABILITIES[PROVIDER].cache_device
FLOAT = "fp16" if PROVIDER is Provider.CUDA else "fp32"
PROMPT = "The quick brown fox jumps over the lazy dog."
GREEDY = SamplingParams(temperature=0, max_tokens=48, ignore_eos=True)
# a chosen token's reference logit may sit this far below the reference's best (an fp16 near-tie, not an error);
# the tiny models' logits span about -3..3, and their fp16 graphs on the CPU are within 0.003 of transformers
NEAR_TIE = 0.03
DEVICE_OPS = {"GroupQueryAttention", "SkipSimplifiedLayerNormalization"}


def device_of(buffer) -> str:
    return buffer.device_name() if isinstance(buffer, ort.OrtValue) else "cpu"  # host caches are numpy arrays


@pytest.fixture(scope="module")
def built(tiny_build):
    from llm_runtime.model_builder.precision import BuildTarget

    def make(case: str, precision: str) -> Path:
        return tiny_build(case, precision, target=BuildTarget(PROVIDER.value),
                          query_seqlens=ORT_HAS_QUERY_SEQLENS)
    return make


def reference_logits(case: str, precision: str, folder: Path, tiny_hf, ids: list[int]) -> np.ndarray:
    """Logits [len(ids), V] of every position: transformers (fp32) for float graphs; for int4 graphs the same
    artifact on onnxruntime's CPU kernels (transformers has no int4 weights to compare with)."""
    if precision != "int4":
        model = AutoModelForCausalLM.from_pretrained(tiny_hf(case), dtype=torch.float32).eval()
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0].numpy()
    cpu = ModelFolder.open(folder)
    c = cpu.contract
    cache = KVCache(c.num_layers, c.num_kv_heads, c.head_dim, np.dtype(c.kv_dtype), slots=1, capacity=len(ids))
    runner = ModelRunner(cpu, make_session(cpu.model_file, Provider.CPU, SessionConfig()))
    n = len(ids)
    return runner.run(Step(np.array([ids]), np.array([n]), np.array([n]), np.arange(n)), cache).astype(np.float32)


@pytest.mark.parametrize("precision", [FLOAT, "int4"])
@pytest.mark.parametrize("case", ["llama-gqa2", "llama-gqa4-tied"])
def test_greedy_agrees_with_the_reference(case, precision, built, tiny_hf):
    folder = built(case, precision)
    llm = LLM(folder, provider=PROVIDER.value)
    ids = llm.encode(PROMPT)
    out = llm.generate(PROMPT, GREEDY).token_ids
    assert len(out) == GREEDY.max_tokens
    ref = reference_logits(case, precision, folder, tiny_hf, ids + out)[len(ids) - 1:-1]  # [48, V]: before each token
    gap = ref.max(axis=1) - ref[np.arange(len(out)), out]
    assert gap.max() <= NEAR_TIE, f"token {int(gap.argmax())} is {gap.max():.3g} below the reference's best"
    assert all(device_of(b) == DEVICE for b in llm.cache.buffers)


def test_cache_grows_in_device_memory(built):
    """A 16-token cache grows twice on the device (staged through the host) and gives the same tokens."""
    llm = LLM(built("llama-gqa2", FLOAT), provider=PROVIDER.value)
    ids = llm.encode(PROMPT)
    want = llm.generate(PROMPT, GREEDY).token_ids
    c = llm.folder.contract
    cache = KVCache(c.num_layers, c.num_kv_heads, c.head_dim, np.dtype(c.kv_dtype), slots=1, capacity=16,
                    device=DEVICE, max_capacity=llm.folder.context_length)
    runner = ModelRunner(llm.folder, llm.runner.session)
    out = [int(runner.run(prefill_inputs(ids), cache)[-1].argmax())]
    while len(out) < len(want):
        step = decode_inputs(np.array([out[-1]]), np.array([len(ids) + len(out)]))
        out.append(int(runner.run(step, cache)[0].argmax()))
    assert out == want
    assert cache.version == 2 and device_of(cache.buffers[0]) == DEVICE


def test_stream_and_seed_on_the_device(built):
    llm = LLM(built("llama-gqa4-tied", "int4"), provider=PROVIDER.value)
    seeded = SamplingParams(temperature=0.8, top_p=0.9, seed=3, max_tokens=32, ignore_eos=True)
    first = llm.generate(PROMPT, seeded)
    assert llm.generate(PROMPT, seeded).token_ids == first.token_ids
    chunks = list(llm.stream(PROMPT, seeded))
    assert "".join(c.text for c in chunks) == first.text


def test_engine_on_the_device(built, tiny_hf):
    """Several requests batched on the device (onnxruntime < 1.32: runs of consecutive slots, no padded rows);
    each row's greedy tokens agree with the reference up to fp16 near-ties."""
    llm = LLM(built("llama-gqa2", FLOAT), provider=PROVIDER.value, engine=EngineConfig(max_concurrency=3, token_budget=10))
    prompts = [PROMPT, "Once upon a time", "Héllo wörld 🙂", "What is the capital of France?", "0123456789"]
    for prompt, done in zip(prompts, llm.generate(prompts, GREEDY)):
        ids = llm.encode(prompt)
        ref = reference_logits("llama-gqa2", FLOAT, None, tiny_hf, ids + done.token_ids)[len(ids) - 1:-1]
        gap = ref.max(axis=1) - ref[np.arange(len(done.token_ids)), done.token_ids]
        assert len(done.token_ids) == GREEDY.max_tokens and gap.max() <= NEAR_TIE, prompt
    assert llm.engine.stats().running == 0 and device_of(llm.engine.cache.buffers[0]) == DEVICE


@pytest.mark.parametrize("precision", [FLOAT, "int4"])
def test_heavy_ops_run_on_the_device(precision, built, tmp_path):
    """A profiled prefill and decode: attention, norms and weight products on the device, and no per-layer copies
    (the cache is bound in place; only input_ids, the mask and the logits cross)."""
    folder = built("llama-gqa4-tied", precision)
    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp_path / "profile")
    providers = [ORT_NAME] if PROVIDER is Provider.CPU else [ORT_NAME, "CPUExecutionProvider"]
    session = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=providers)
    llm_folder = ModelFolder.open(folder)
    c = llm_folder.contract
    cache = KVCache(c.num_layers, c.num_kv_heads, c.head_dim, np.dtype(c.kv_dtype), slots=1, capacity=64, device=DEVICE)
    runner = ModelRunner(llm_folder, session)
    token = int(runner.run(prefill_inputs([5, 17, 33, 100]), cache)[-1].argmax())
    runner.run(decode_inputs(np.array([token]), np.array([5])), cache)
    events = json.loads(Path(session.end_profiling()).read_text())
    placed: dict[str, set[str]] = {}
    for e in events:
        if e.get("cat") == "Node" and "op_name" in e.get("args", {}):
            placed.setdefault(e["args"]["op_name"], set()).add(e["args"].get("provider", ""))
    print("op placement:", {op: sorted(p) for op, p in sorted(placed.items())})
    heavy = DEVICE_OPS | ({"MatMulNBits"} if precision == "int4" else {"MatMul"})
    for op in heavy & placed.keys():
        assert placed[op] == {ORT_NAME}, f"{op} ran on {placed[op]}"
    assert heavy <= placed.keys() or PROVIDER is not Provider.CUDA
    copies = [e for e in events if e.get("cat") == "Node" and e.get("args", {}).get("op_name", "").startswith("Memcpy")]
    assert len(copies) <= 2 * 6  # two runs, a handful each: never two per layer


@pytest.mark.skipif(DEVICE == "cpu", reason="only an accelerator session refuses a host cache")
def test_a_host_cache_is_refused(built):
    """A host buffer bound to a device session is copied once, at bind time: the runner refuses it."""
    llm = LLM(built("llama-gqa2", FLOAT), provider=PROVIDER.value)
    c = llm.folder.contract
    cache = KVCache(c.num_layers, c.num_kv_heads, c.head_dim, np.dtype(c.kv_dtype), slots=1, capacity=16)
    with pytest.raises(ValueError, match=f"{DEVICE} memory"):
        ModelRunner(llm.folder, llm.runner.session).run(prefill_inputs([5, 17, 33]), cache)
