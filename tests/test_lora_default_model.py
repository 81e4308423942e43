"""LoRA on the default model: `LLM("default", adapters=...)` gets a LoRA build of its own, and its int4 greedy tokens
under random PEFT adapters equal transformers + PEFT's on the GGUF's dequantized weights until a near-tie (int4
activations round the logits by a few tenths: a top-two gap below NEAR_TIE may part either way)."""
import copy

import pytest
from lora_reference import AdapterSpec, lora_adapter, peft_greedy, peft_model

from llm_runtime import LLM, SamplingParams
from llm_runtime.llm_config import LLMConfig
from llm_runtime.model_builder.built_folder import LORA_MODEL_FILE

ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# chosen among a few seeds and sizes as adapters that change the reply early, with no near-tie for 20 and 5 tokens
SPECS = [AdapterSpec("all_r16", 16, 32.0, ALL, seed=3, std=0.05),
         AdapterSpec("qvd_r8_rs", 8, 8.0, ("q_proj", "v_proj", "down_proj"), rslora=True, seed=4, std=0.03)]
FRANCE = [{"role": "user", "content": "Name the capital city of France."}]
TOKENS, NEAR_TIE = 20, 0.3


@pytest.fixture(scope="module")
def peft(smollm_transformers):
    return peft_model(copy.deepcopy(smollm_transformers[0]), SPECS)


def test_default_with_adapters_resolves_to_a_lora_build(tmp_path, monkeypatch, smollm_gguf):
    monkeypatch.setenv("LLM_RUNTIME_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / smollm_gguf.name).symlink_to(smollm_gguf)  # no download
    folder = LLMConfig.of("default", adapters={"a": "unused.safetensors"}).model_folder(progress=False)
    assert folder.name.endswith("-lora-qkvogaupdo") and (folder / LORA_MODEL_FILE).is_file()


def test_int4_greedy_under_adapters_equals_peft_until_a_near_tie(smollm_build, peft):
    llm = LLM(smollm_build("int4", lora_targets=("q", "k", "v", "o", "gate", "up", "down")),
              adapters={s.name: lora_adapter(peft, s) for s in SPECS})
    prompt = llm.encode(llm.render_chat(FRANCE), special=False)
    base, _ = peft_greedy(peft, None, prompt, TOKENS)
    for spec in SPECS:
        ref, gaps = peft_greedy(peft, spec.name, prompt, TOKENS)
        compared = next((i for i, gap in enumerate(gaps) if gap < NEAR_TIE), TOKENS)
        assert compared >= 5 and ref[:compared] != base[:compared]  # the adapter changes what is compared
        params = SamplingParams(temperature=0, max_tokens=TOKENS, ignore_eos=True, adapter=spec.name)
        ours = llm.submit(prompt, params).result().token_ids
        assert ours[:compared] == ref[:compared], spec.name
