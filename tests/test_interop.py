"""Our built folders load and generate in onnxruntime-genai, and agree with transformers and our own driver."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime_genai as og
import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

from graph_driver import PlainDecoder

TEXTS = ["Hello, world! How are you today?", "naïve café — 日本語のテキスト 🤗", "In 2024, pi was 3.14159\n\n\ttabs"]


def genai_greedy(model: og.Model, prompt: list[int], new_tokens: int) -> list[int]:
    """onnxruntime-genai's greedy search from `prompt`; stops at the model's eos or after `new_tokens`."""
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + new_tokens, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.array(prompt, dtype=np.int32))
    out = []
    while not generator.is_done():
        generator.generate_next_token()
        out.append(int(generator.get_next_tokens()[0]))
    return out


def chat_ids(tok, question: str) -> list[int]:
    text = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                   tokenize=False)
    return tok(text).input_ids


@pytest.fixture(scope="module")
def genai_int4(smollm_build) -> tuple[og.Model, Path]:
    folder = smollm_build("int4")
    return og.Model(str(folder)), folder


def test_genai_tokenizer_matches_ours(genai_int4, smollm_transformers):
    model, folder = genai_int4
    og_tok, ours = og.Tokenizer(model), Tokenizer.from_file(str(folder / "tokenizer.json"))
    _, tok = smollm_transformers
    chat = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                   add_generation_prompt=True, tokenize=False)
    for text in TEXTS + [chat]:
        ids = ours.encode(text).ids
        assert og_tok.encode(text).tolist() == ids, text
        assert og_tok.decode(np.array(ids, dtype=np.int32)) == ours.decode(ids, skip_special_tokens=True), text


def test_genai_int4_answers_a_chat_prompt(genai_int4, smollm_transformers):
    model, folder = genai_int4
    prompt = chat_ids(smollm_transformers[1], "What is the capital of France?")
    out = genai_greedy(model, prompt, 24)
    answer = og.Tokenizer(model).decode(np.array(out, dtype=np.int32))
    assert "Paris" in answer, answer
    assert out == PlainDecoder(folder).greedy(prompt, len(out))  # the same graph through our plain driver


def test_genai_fp32_greedy_equals_transformers(smollm_build, smollm_transformers):
    """32 tokens; this prompt's answer is longer than that (smallest top-2 logit gap in it, measured: 0.077)."""
    model, tok = smollm_transformers
    prompt = chat_ids(tok, "List three facts about the Moon.")
    with torch.no_grad():
        ref = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=32)[0, len(prompt):].tolist()
    assert len(ref) == 32
    assert genai_greedy(og.Model(str(smollm_build("fp32"))), prompt, 32) == ref


@pytest.mark.parametrize("case", ["llama-gqa2", "llama3-rope-bias"])
def test_genai_tiny_greedy_equals_ours_and_transformers(case, tiny_hf, tiny_build):
    prompt = [5, 17, 33, 100, 7, 250, 9, 11, 3, 42]
    out = genai_greedy(og.Model(str(tiny_build(case))), prompt, 32)
    assert len(out) == 32  # no eos on this prompt
    assert out == PlainDecoder(tiny_build(case)).greedy(prompt, 32)
    hf = AutoModelForCausalLM.from_pretrained(tiny_hf(case), dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=32)[0, len(prompt):].tolist()
    assert out == ref
