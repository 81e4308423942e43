"""The served model's recommended sampling as the defaults of a request: `serve --generation-config
auto|none|FILE` and `--override-generation-config`, through real server processes on loopback. A tiny random
model that recommends temperature 0 makes the defaults observable: a request that leaves temperature out gives
the greedy tokens."""
from __future__ import annotations

import json
import shutil

import httpx
import pytest
from server_process import serving

from llm_runtime.errors import ParameterError
from llm_runtime.openai.generation_config import GenerationConfig
from llm_runtime.openai.request import parse_request

ASK = [{"role": "user", "content": "Tell me a story."}]


@pytest.fixture(scope="module")
def greedy_model(tiny_build, tmp_path_factory):
    """A tiny built model whose generation_config.json recommends temperature 0 (greedy)."""
    folder = shutil.copytree(tiny_build("llama-gqa2"), tmp_path_factory.mktemp("greedy") / "model")
    path = folder / "generation_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "temperature": 0.0}))
    return folder


def chat(base: str, **fields) -> str:
    body = {"model": "m", "messages": ASK, "max_tokens": 12, "ignore_eos": True, **fields}
    reply = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    return reply.json()["choices"][0]["message"]["content"]


def complete(base: str, **fields) -> str:
    body = {"model": "m", "prompt": "Once upon", "max_tokens": 12, "ignore_eos": True, **fields}
    return httpx.post(f"{base}/v1/completions", json=body, timeout=60).json()["choices"][0]["text"]


def test_a_request_takes_the_models_value_then_the_documented_default():
    config = GenerationConfig.of("auto", '{"top_k": 5}')
    defaults = config.defaults({"temperature": 0.2, "top_p": 0.9})
    assert defaults == {"temperature": 0.2, "top_p": 0.9, "top_k": 5}
    body = {"messages": ASK, "top_p": 0.5}
    params = parse_request(body, "chat", defaults=defaults).params
    assert (params.temperature, params.top_p, params.top_k, params.min_p) == (0.2, 0.5, 5, 0.0)
    assert parse_request(body, "chat").params.temperature == 1.0
    assert GenerationConfig.of("none").defaults({"temperature": 0.2}) == {}


def test_a_file_of_fields(tmp_path):
    (tmp_path / "generation_config.json").write_text('{"temperature": 0.3, "eos_token_id": 2}')
    assert GenerationConfig.of(str(tmp_path)).defaults({"temperature": 0.9}) == {"temperature": 0.3}
    assert GenerationConfig.of(str(tmp_path / "generation_config.json")).fields == {"temperature": 0.3}


@pytest.mark.parametrize("source, overrides, says", [
    ("missing.json", None, "cannot read"),
    ("auto", "{", "not valid JSON"),
    ("auto", '{"max_tokens": 5}', "max_tokens cannot be set here"),
    ("auto", '{"temperature": -1}', "temperature"),
    ("auto", "[1]", "JSON object"),
])
def test_bad_flags_are_refused_at_start(source, overrides, says):
    with pytest.raises(ValueError, match=says) as e:
        GenerationConfig.of(source, overrides)
    assert not isinstance(e.value, ParameterError)


def test_auto_samples_with_the_models_settings(greedy_model):
    with serving(greedy_model, "--served-model-name", "m") as base:
        card = httpx.get(f"{base}/v1/models").json()["data"][0]
        assert card["generation_config"] == {"temperature": 0.0}
        assert httpx.get(f"{base}/v1/models/m").json()["generation_config"] == {"temperature": 0.0}
        greedy = chat(base, temperature=0)
        assert chat(base, seed=1) == chat(base, seed=2) == greedy
        assert complete(base, seed=1) == complete(base, temperature=0)
        response = httpx.post(f"{base}/v1/responses", json={"model": "m", "input": "Hi", "max_output_tokens": 4},
                              timeout=60).json()
        assert response["temperature"] == 0.0
        sampled = {chat(base, temperature=1.0, seed=s) for s in range(4)}
        assert sampled != {greedy}  # the tiny model samples differently at 1.0: the check above means something


@pytest.mark.parametrize("flags", [("--generation-config", "none"),
                                   ("--override-generation-config", '{"temperature": 1.0}')])
def test_none_restores_the_documented_default_and_an_override_wins(greedy_model, flags):
    with serving(greedy_model, "--served-model-name", "m", *flags) as base:
        expected = {} if flags[0] == "--generation-config" else {"temperature": 1.0}
        assert httpx.get(f"{base}/v1/models").json()["data"][0]["generation_config"] == expected
        for seed in range(3):
            assert chat(base, seed=seed) == chat(base, seed=seed, temperature=1.0)


def test_the_readme_question_with_the_default_models_settings(smollm_build, tmp_path, monkeypatch):
    """`serve --model default` records the card's sampling in the cached folder (one built before has it added)
    and answers README's quick-start request as written (a seed only to make the check repeatable)."""
    import openai

    from llm_runtime.models.default import RECOMMENDED_SAMPLING
    from llm_runtime.models.resolver import build_options_for

    monkeypatch.setenv("LLM_RUNTIME_HOME", str(tmp_path))
    shutil.copytree(smollm_build("int4"), tmp_path / "models" / f"smollm2-135m-instruct-{build_options_for('cpu').tag}")
    with serving("default") as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0)
        assert client.models.list().data[0].generation_config == RECOMMENDED_SAMPLING
        for seed in range(4):
            reply = client.chat.completions.create(model="default", max_tokens=16, seed=seed, messages=[
                {"role": "user", "content": "Name the capital city of France."}])
            assert "Paris" in reply.choices[0].message.content
