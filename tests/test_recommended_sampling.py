"""A built folder records its source's recommended sampling (generation_config.json as vLLM reads it) in its
generation_config.json and in genai_config.json's search section; the default model's come from its card."""
from __future__ import annotations

import json
import shutil

import pytest

from llm_runtime.model_builder.build import BuildOptions, build
from llm_runtime.model_builder.recommended_sampling import (folder_sampling, genai_search, record_sampling,
                                                            recommended_sampling)
from llm_runtime.models.default import RECOMMENDED_SAMPLING
from llm_runtime.models.folder import ModelFolder


def with_generation_config(tiny_hf, tmp_path, **fields):
    """A copy of the tiny llama's Hugging Face folder whose generation_config.json also holds `fields`."""
    folder = shutil.copytree(tiny_hf("llama-gqa2"), tmp_path / "hf")
    path = folder / "generation_config.json"
    gen = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**gen, **fields}))
    return folder


def test_fields_are_read_as_vllm_reads_them():
    gen = {"do_sample": True, "temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0, "typical_p": 1.0,
           "repetition_penalty": 1.05, "eos_token_id": 2, "max_new_tokens": 100}
    # typical_p 1.0 is transformers' default: it recommends nothing; min_p 0 differs from its default (None)
    assert recommended_sampling(gen) == {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0,
                                         "repetition_penalty": 1.05}
    assert recommended_sampling({"bos_token_id": 1, "eos_token_id": 2, "top_k": 50, "temperature": True}) == {}


def test_genai_samples_only_where_the_model_recommends_it():
    greedy = {"do_sample": False, "temperature": 1.0, "top_k": 1, "top_p": 1.0, "repetition_penalty": 1.0}
    assert genai_search(greedy, {}) == greedy
    assert genai_search(greedy, {"temperature": 0.2, "top_p": 0.9}) == {
        **greedy, "do_sample": True, "temperature": 0.2, "top_p": 0.9, "top_k": 50}
    assert genai_search(greedy, {"temperature": 0.0, "top_p": 0.9}) == {**greedy, "temperature": 0.0, "top_p": 0.9}


def test_a_hugging_face_build_records_its_generation_config(tiny_hf, tmp_path):
    source = with_generation_config(tiny_hf, tmp_path, temperature=0.7, top_p=0.8, top_k=20, do_sample=True)
    build(source, tmp_path / "built", BuildOptions(), progress=False)
    want = {"temperature": 0.7, "top_p": 0.8, "top_k": 20}
    assert ModelFolder.open(tmp_path / "built").sampling == want == folder_sampling(tmp_path / "built")
    search = json.loads((tmp_path / "built" / "genai_config.json").read_text())["search"]
    assert {k: search[k] for k in ("do_sample", "temperature", "top_p", "top_k")} == {"do_sample": True, **want}


def test_a_gguf_without_sampling_metadata_records_none(smollm_build):
    assert ModelFolder.open(smollm_build("int4")).sampling == {}


def test_the_default_models_card_values_are_recorded_once(tiny_build, tmp_path):
    folder = shutil.copytree(tiny_build("llama-gqa2"), tmp_path / "model")
    assert record_sampling(folder, RECOMMENDED_SAMPLING)
    assert not record_sampling(folder, RECOMMENDED_SAMPLING)  # already there: nothing written
    assert ModelFolder.open(folder).sampling == RECOMMENDED_SAMPLING == {"temperature": 0.2, "top_p": 0.9}
    gen = json.loads((folder / "generation_config.json").read_text())
    assert gen["eos_token_id"] is not None  # the rest of the file is kept


@pytest.mark.parametrize("bad", ["{", "[]"])
def test_an_unreadable_generation_config_recommends_nothing(tmp_path, bad):
    (tmp_path / "generation_config.json").write_text(bad)
    assert folder_sampling(tmp_path) == {}
