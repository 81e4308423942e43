"""Both ways: our built folders load and generate in onnxruntime-genai, and folders built by onnxruntime-genai's
builder load and generate in our runtime (single sequence and engine), agreeing with transformers and each other."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime_genai as og
import pytest
import torch
from graph_driver import PlainDecoder, genai_greedy
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

from llm_runtime import LLM, SamplingParams
from llm_runtime.engine import EngineConfig

TEXTS = ["Hello, world! How are you today?", "naïve café — 日本語のテキスト 🤗", "In 2024, pi was 3.14159\n\n\ttabs"]


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
    prompt = chat_ids(smollm_transformers[1], "Name the capital city of France.")  # no near-tie (test_llm.FRANCE)
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


# ---- onnxruntime-genai's builds in our runtime ----

GENAI_CASE = "llama-gqa2"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def genai_built(tiny_hf, tmp_path_factory):
    """precision -> a folder built from the tiny llama by onnxruntime-genai's own builder (CPU)."""
    made: dict[str, Path] = {}

    def make(precision: str) -> Path:
        if precision not in made:
            out = tmp_path_factory.mktemp(f"genai-{precision}") / "model"
            subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(tiny_hf(GENAI_CASE)),
                            "-o", str(out), "-p", precision, "-e", "cpu", "-c", str(out.parent / "cache")],
                           check=True, capture_output=True, env={**os.environ, **OFFLINE})
            made[precision] = out
        return made[precision]
    return make


def test_our_runtime_runs_genai_builds(genai_built, tiny_hf):
    """fp32: our greedy tokens equal transformers'; int4: they equal onnxruntime-genai's on its own graph."""
    prompt = [5, 17, 33, 100, 7, 250, 9, 11, 3, 42]
    params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
    ours = LLM(genai_built("fp32"))
    assert not ours.runner.has_query_seqlens and not ours.runner.has_logits_indices
    hf = AutoModelForCausalLM.from_pretrained(tiny_hf(GENAI_CASE), dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=32)[0, len(prompt):].tolist()
    assert [t for c in ours.stream_ids(prompt, params) for t in c.token_ids] == ref
    int4 = genai_built("int4")
    out = genai_greedy(og.Model(str(int4)), prompt, 32)
    assert [t for c in LLM(int4).stream_ids(prompt, params) for t in c.token_ids] == out


def test_engine_batches_a_graph_without_query_seqlens(genai_built):
    """No idle or padded rows: decodes in runs of consecutive slots, each prompt chunk alone."""
    llm = LLM(genai_built("fp32"), engine=EngineConfig(max_concurrency=3, token_budget=10))
    prompts = ["Once upon a time", "The quick brown fox jumps", "Héllo wörld 🙂", "What is the capital of France?",
               "0123456789", "a"]
    params = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)
    alone = [llm.generate(p, params).token_ids for p in prompts]
    assert [c.token_ids for c in llm.generate(prompts, params)] == alone
    assert llm.engine.stats().running == 0 and llm.engine.cache.free_slots == 3



def test_perplexity_runs_genai_builds(genai_built, tiny_hf, tiny_build):
    """`llm-runtime perplexity` on onnxruntime-genai's fp32 folder (no logits_indices: every position comes back)
    equals transformers' perplexity of the same windows, and its KL from our own fp32 build of the weights is 0."""
    from llm_runtime.evaluation.perplexity import LogitsModel, evaluate, windows

    model, ours = LogitsModel(genai_built("fp32"), threads=1), LogitsModel(tiny_build(GENAI_CASE), threads=1)
    tokens = [(7 * i + 3) % 200 + 5 for i in range(80)]
    spans = windows(len(tokens), 32, 16)
    report = evaluate(model, tokens, spans, reference=ours, progress=False)
    hf = AutoModelForCausalLM.from_pretrained(tiny_hf(GENAI_CASE), dtype=torch.float32).eval()
    nll = []
    with torch.no_grad():
        for w in spans:
            ids = torch.tensor([tokens[w.begin:w.end]])
            first = w.scored - w.begin - 1
            logits = hf(ids).logits[0].double()
            nll.append(torch.nn.functional.cross_entropy(logits[first:-1], ids[0, first + 1:], reduction="none"))
    assert report.tokens == len(tokens) - 1
    assert report.perplexity == pytest.approx(math.exp(torch.cat(nll).mean().item()), rel=1e-5)
    assert report.kl_mean < 1e-9 and report.top1 == 1
