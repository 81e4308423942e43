"""LoRA adapters per request through the engine: concurrent requests of three adapters and the base each get
transformers + PEFT's greedy tokens, speculation stays exact per row, cached prompts are never shared across
adapters, errors name `adapter`, and loading and unloading under traffic loses no request."""
import threading

import pytest
import torch
from lora_reference import AdapterSpec, lora_adapter, peft_greedy, peft_model
from transformers import AutoModelForCausalLM

from llm_runtime import LLM, SamplingParams
from llm_runtime.errors import ParameterError
from llm_runtime.model_builder.contract import LORA_TARGETS

CASE = "llama-gqa2"
SPECS = [
    AdapterSpec("attn-r4", 4, 8.0, ("q_proj", "k_proj", "v_proj", "o_proj"), seed=1, std=0.2),
    AdapterSpec("mlp-r16-rs", 16, 4.0, ("gate_proj", "up_proj", "down_proj"), rslora=True, seed=2, std=0.2),
    AdapterSpec("qv-r8", 8, 16.0, ("q_proj", "v_proj"), seed=3, std=0.2),
]
NAMES = [None] + [s.name for s in SPECS]
PROMPT = [5, 17, 33, 100, 7, 250, 9, 11, 3, 42, 61, 8, 140, 27, 300, 19, 4, 77]  # 18: past the prefix minimum
TOKENS = 16


def greedy(adapter=None, **kw) -> SamplingParams:
    return SamplingParams(temperature=0, max_tokens=TOKENS, ignore_eos=True, adapter=adapter, **kw)


@pytest.fixture(scope="module")
def peft(tiny_hf):
    base = AutoModelForCausalLM.from_pretrained(tiny_hf(CASE), dtype=torch.float32).eval()
    return peft_model(base, SPECS)


@pytest.fixture(scope="module")
def adapters(peft):
    return {s.name: lora_adapter(peft, s) for s in SPECS}


@pytest.fixture(scope="module")
def expected(peft):
    return {name: peft_greedy(peft, name, PROMPT, TOKENS)[0] for name in NAMES}


@pytest.fixture(scope="module")
def llm(tiny_build, adapters):
    return LLM(tiny_build(CASE, lora_targets=LORA_TARGETS), adapters=adapters)


def test_concurrent_requests_of_three_adapters_and_the_base_each_get_their_own_tokens(llm, expected):
    assert len(set(map(tuple, expected.values()))) == 4  # the adapters change the greedy tokens
    handles = [llm.submit(PROMPT, greedy(name)) for name in NAMES * 2]
    for name, h in zip(NAMES * 2, handles):
        assert h.result().token_ids == expected[name], name


def test_verified_drafts_stay_exact_per_row(llm, expected):
    """Each request predicts its own reply (Predicted Outputs): the verified runs mix rows of every adapter."""
    before = llm.engine.stats().verifications
    text = {name: llm.tokenizer.decode(expected[name]) for name in NAMES}
    handles = [llm.submit(PROMPT, greedy(name, prediction=text[name])) for name in NAMES]
    for name, h in zip(NAMES, handles):
        assert h.result().token_ids == expected[name], name
    assert llm.engine.stats().verifications - before >= 2


def test_a_prompt_cached_under_one_adapter_is_not_reused_under_another(llm, expected):
    llm.reset_prefix_cache()
    first = llm.submit(PROMPT, greedy("attn-r4")).result()
    other = llm.submit(PROMPT, greedy("qv-r8")).result()
    base = llm.submit(PROMPT, greedy()).result()
    same = llm.submit(PROMPT, greedy("attn-r4")).result()
    assert first.usage.cached_tokens == 0 and other.usage.cached_tokens == 0 and base.usage.cached_tokens == 0
    assert same.usage.cached_tokens >= 16  # the same adapter takes its own cached prompt
    assert (first.token_ids, other.token_ids, base.token_ids, same.token_ids) == \
        (expected["attn-r4"], expected["qv-r8"], expected[None], expected["attn-r4"])


def test_an_unknown_adapter_or_a_model_without_lora_is_a_parameter_error(llm, tiny_llm):
    with pytest.raises(ParameterError, match="Unknown adapter 'nope'.*attn-r4") as e:
        llm.submit(PROMPT, greedy("nope"))
    assert e.value.param == "adapter"
    with pytest.raises(ParameterError, match="serves no adapters") as e:
        tiny_llm.submit(PROMPT, greedy("attn-r4"))
    assert e.value.param == "adapter"
    with pytest.raises(ParameterError, match="adapter"):
        SamplingParams(adapter="")
    with pytest.raises(ValueError, match="without LoRA inputs"):
        LLM(tiny_llm.folder.path, adapters={"a": None})


def test_loading_and_unloading_under_traffic_loses_no_request(tiny_build, adapters, expected):
    llm = LLM(tiny_build(CASE, lora_targets=LORA_TARGETS), adapters={"attn-r4": adapters["attn-r4"]})
    results, errors = [], []
    stop = threading.Event()

    def churn():  # another adapter in and out while requests run
        while not stop.is_set():
            llm.load_adapter("mlp-r16-rs", adapters["mlp-r16-rs"])
            llm.load_adapter("qv-r8", adapters["qv-r8"])
            llm.unload_adapter("mlp-r16-rs")
            llm.unload_adapter("qv-r8")

    def client(names):
        for name in names:
            try:
                results.append((name, llm.submit(PROMPT, greedy(name)).result().token_ids))
            except ParameterError as e:  # the churned adapter was unloaded when the request came: refused, not lost
                errors.append((name, e))

    churner = threading.Thread(target=churn)
    churner.start()
    clients = [threading.Thread(target=client, args=(names,)) for names in
               ([None, "attn-r4"] * 3, ["attn-r4", "mlp-r16-rs"] * 3, ["qv-r8", None] * 3)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(timeout=120)
    stop.set()
    churner.join(timeout=30)
    assert len(results) + len(errors) == 18
    assert all(name in ("mlp-r16-rs", "qv-r8") and "Unknown adapter" in str(e) for name, e in errors)
    for name, tokens in results:
        assert tokens == expected[name], name
    assert sum(1 for name, _ in results if name in (None, "attn-r4")) == 12


def test_a_request_finding_every_adapter_slot_held_is_refused_as_busy(tiny_build, adapters, expected):
    """One slot, held by a running request: a request for another adapter is told to retry (the server's 429), and
    takes the slot once the first ends."""
    from llm_runtime.adapters import LoraConfig
    from llm_runtime.engine import QueueFullError

    llm = LLM(tiny_build(CASE, lora_targets=LORA_TARGETS), adapters=adapters, lora=LoraConfig(max_slots=1))
    held = llm.submit(PROMPT, greedy("attn-r4"))
    with pytest.raises(QueueFullError, match="adapter slots"):
        llm.submit(PROMPT, greedy("qv-r8"))
    assert held.result().token_ids == expected["attn-r4"]
    assert llm.submit(PROMPT, greedy("qv-r8")).result().token_ids == expected["qv-r8"]


def test_a_llama_cpp_gguf_lora_loads_by_path_with_its_peft_folders_tokens(tiny_build, tiny_hf):
    """llama.cpp's converter permutes a llama LoRA's q/k rows; loading the file by path reads them back with the
    base's head counts (the LLM passes its config.json), so the tokens are the PEFT folder's it was made from."""
    from pathlib import Path

    from peft import PeftModel

    fixture = Path(__file__).parent / "fixtures" / "lora-llama"
    base = AutoModelForCausalLM.from_pretrained(tiny_hf(CASE), dtype=torch.float32).eval()
    want = peft_greedy(PeftModel.from_pretrained(base, fixture, adapter_name="g").eval(), "g", PROMPT, TOKENS)[0]
    llm = LLM(tiny_build(CASE, lora_targets=LORA_TARGETS), adapters={"g": fixture / "adapter-f32.gguf"})
    assert llm.submit(PROMPT, greedy("g")).result().token_ids == want
