"""The Python API end to end: greedy parity (transformers, onnxruntime-genai), streaming, sampling, stops, errors."""
import json
import math
import shutil
from dataclasses import replace

import onnxruntime as ort
import pytest
import torch
from graph_driver import genai_greedy
from transformers import AutoModelForCausalLM

from llm_runtime import LLM, Completion, SamplingParams
from llm_runtime.errors import ParameterError
from llm_runtime.graph.providers import ProviderError
from llm_runtime.model_builder.source import SourceError
from llm_runtime.models.folder import ModelFolderError

TINY_CASES = ["llama-gqa2", "llama-gqa4-tied", "llama3-rope-bias"]
TINY_PROMPT = "The quick brown fox jumps over the lazy dog."
POEM = [{"role": "user", "content": "Write a short poem about the sea."}]
# "What is the capital of France?" is a near-tie in fp32 itself ("The" 0.08 nats above "L"): builds and CPUs part
# on it. This one answers "The capital city of France is Paris." in every build, its top two >= 0.66 apart.
FRANCE = [{"role": "user", "content": "Name the capital city of France."}]
GREEDY_64 = SamplingParams(temperature=0, max_tokens=64, ignore_eos=True)


def chat_text(llm: LLM, messages) -> str:
    return llm.render_chat(messages)


# ---- greedy parity ----

@pytest.mark.parametrize("case", TINY_CASES)
def test_tiny_greedy_matches_transformers(case, tiny_hf, tiny_build):
    llm = LLM(tiny_build(case))
    ids = llm.encode(TINY_PROMPT)
    ours = llm.generate(TINY_PROMPT, GREEDY_64)
    model = AutoModelForCausalLM.from_pretrained(tiny_hf(case), dtype=torch.float32).eval()
    with torch.no_grad():
        ref = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=64, min_new_tokens=64,
                             eos_token_id=None, pad_token_id=0)[0, len(ids):].tolist()
    assert len(ref) == 64
    assert ours.token_ids == ref
    assert ours.finish_reason == "length" and ours.usage.completion_tokens == 64


def test_smollm2_fp32_greedy_matches_transformers(smollm_build, smollm_transformers):
    llm = LLM(smollm_build("fp32"))
    model, hf_tok = smollm_transformers
    prompt = chat_text(llm, POEM)
    ids = llm.encode(prompt)
    assert ids == hf_tok(prompt, add_special_tokens=False)["input_ids"]
    ours = llm.generate(prompt, GREEDY_64)
    with torch.no_grad():
        ref = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=64, min_new_tokens=64,
                             eos_token_id=None, pad_token_id=0)[0, len(ids):].tolist()
    assert ours.token_ids == ref


@pytest.mark.parametrize("messages", [POEM, FRANCE], ids=["poem", "france-eos"])
def test_smollm2_int4_greedy_matches_onnxruntime_genai(smol_llm, messages):
    import onnxruntime_genai as og

    prompt = chat_text(smol_llm, messages)
    ids = smol_llm.encode(prompt)
    ours = smol_llm.generate(prompt, SamplingParams(temperature=0, max_tokens=64))
    ref = genai_greedy(og.Model(str(smol_llm.folder.path)), ids, 64)
    assert ours.token_ids == ref
    if ref[-1] in smol_llm.folder.eos_token_ids:
        assert len(ref) < 64 and ours.finish_reason == "stop"
    else:
        assert len(ref) == 64 and ours.finish_reason == "length"


# ---- streaming, sampling, finish reasons, usage ----

@pytest.mark.parametrize("params", [
    SamplingParams(temperature=0, max_tokens=40),
    SamplingParams(temperature=0.9, top_p=0.95, top_k=50, seed=7, max_tokens=40),
], ids=["greedy", "seeded"])
def test_stream_equals_generate(smol_llm, params):
    prompt = chat_text(smol_llm, POEM)
    chunks = list(smol_llm.stream(prompt, params))
    done = smol_llm.generate(prompt, params)
    assert "".join(c.text for c in chunks) == done.text
    assert [t for c in chunks for t in c.token_ids] == done.token_ids
    assert all(len(c.token_ids) == 1 for c in chunks)
    assert all(c.finish_reason is None and c.usage is None for c in chunks[:-1])
    # the second run takes the first's prompt from the prefix cache: only the usage's cached_tokens differ
    assert done.usage.cached_tokens > 0
    assert chunks[-1].finish_reason == done.finish_reason
    assert replace(chunks[-1].usage, cached_tokens=done.usage.cached_tokens) == done.usage
    assert Completion.fold(iter(chunks)) == replace(done, usage=chunks[-1].usage)
    assert done.text == smol_llm.tokenizer.decode(done.token_ids)


def test_seed_repeats_and_seeds_differ(smol_llm):
    prompt = chat_text(smol_llm, POEM)

    def run(seed):
        return smol_llm.generate(prompt, SamplingParams(temperature=1.0, seed=seed, max_tokens=32, ignore_eos=True))

    first, again, other = run(1234), run(1234), run(4321)
    assert first.token_ids == again.token_ids and first.text == again.text
    assert first.token_ids != other.token_ids


def test_finish_reason_length_and_usage(smol_llm):
    prompt = "The capital of France is"
    done = smol_llm.generate(prompt, SamplingParams(temperature=0, max_tokens=5, ignore_eos=True))
    assert len(done.token_ids) == 5 and done.finish_reason == "length"
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (len(smol_llm.encode(prompt)), 5)
    assert done.usage.total_tokens == done.usage.prompt_tokens + 5
    assert done.logprobs is None


def test_finish_reason_stop_at_eos(smol_llm):
    prompt = chat_text(smol_llm, FRANCE)
    done = smol_llm.generate(prompt, SamplingParams(temperature=0, max_tokens=64))
    assert done.finish_reason == "stop"
    assert done.token_ids[-1] in smol_llm.folder.eos_token_ids
    assert not any(t in smol_llm.folder.eos_token_ids for t in done.token_ids[:-1])
    assert done.usage.completion_tokens == len(done.token_ids) < 64
    assert done.usage.prompt_tokens == len(smol_llm.encode(prompt))
    assert "<|im_end|>" not in done.text
    # with ignore_eos the same prompt runs on to max_tokens
    longer = smol_llm.generate(prompt, SamplingParams(temperature=0, max_tokens=len(done.token_ids) + 3,
                                                      ignore_eos=True))
    assert longer.finish_reason == "length" and longer.token_ids[:len(done.token_ids)] == done.token_ids


def test_stop_token_ids(smol_llm):
    prompt = chat_text(smol_llm, POEM)
    full = smol_llm.generate(prompt, SamplingParams(temperature=0, max_tokens=20))
    stop_id = full.token_ids[5]
    first = full.token_ids.index(stop_id)
    done = smol_llm.generate(prompt, SamplingParams(temperature=0, max_tokens=20, stop_token_ids=[stop_id]))
    assert done.token_ids == full.token_ids[:first + 1] and done.finish_reason == "stop"


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=0, max_tokens=12, logprobs=True, top_logprobs=5),
    SamplingParams(temperature=1.0, seed=3, max_tokens=12, logprobs=True, top_logprobs=3),
], ids=["greedy", "sampled"])
def test_logprobs(smol_llm, params):
    prompt = chat_text(smol_llm, POEM)
    done = smol_llm.generate(prompt, params)
    chunks = list(smol_llm.stream(prompt, params))
    assert [lp for c in chunks for lp in c.logprobs] == done.logprobs
    assert len(done.logprobs) == len(done.token_ids)
    for token, lp in zip(done.token_ids, done.logprobs):
        assert lp.token_id == token and lp.token == smol_llm.tokenizer.decode([token])
        assert lp.logprob <= 0 and math.isfinite(lp.logprob)
        assert len(lp.top) == params.top_logprobs
        values = [v for _, _, v in lp.top]
        assert values == sorted(values, reverse=True)
        assert sum(math.exp(v) for v in values) <= 1 + 1e-5
        assert all(text == smol_llm.tokenizer.decode([i]) for i, text, _ in lp.top)
        if params.greedy:
            assert lp.top[0][0] == token and lp.top[0][2] == pytest.approx(lp.logprob)
        else:
            assert lp.logprob <= lp.top[0][2] + 1e-6
            for i, _, v in lp.top:
                if i == token:
                    assert v == pytest.approx(lp.logprob)
    # the same greedy tokens as without logprobs
    plain = smol_llm.generate(prompt, SamplingParams(temperature=params.temperature, seed=params.seed, max_tokens=12))
    assert plain.token_ids == done.token_ids and plain.logprobs is None


def spanning_stop(llm: LLM, ids: list[int]) -> tuple[str, int, int]:
    """A 4-character stop string across a token boundary of `ids`'s text, with text before it:
    (stop, where it starts in the text, index of the token that completes it)."""
    text = llm.tokenizer.decode(ids)
    ends = [len(llm.tokenizer.decode(ids[:k + 1])) for k in range(len(ids))]
    for k in range(2, len(ids) - 1):
        start, before, after = ends[k], ends[k] - ends[k - 1], ends[k + 1] - ends[k]
        stop = text[start - 2:start + 2]
        if before >= 2 and after >= 2 and stop.isprintable() and text.find(stop) == start - 2:
            return stop, start - 2, k + 1
    raise AssertionError(f"no stop string candidate in {text!r}")


def test_stop_string_spanning_tokens(smol_llm):
    prompt = chat_text(smol_llm, POEM)
    full = smol_llm.generate(prompt, SamplingParams(temperature=0, max_tokens=48, ignore_eos=True))
    stop, cut, last = spanning_stop(smol_llm, full.token_ids)
    params = SamplingParams(temperature=0, max_tokens=48, ignore_eos=True, stop=["never appears", stop])
    done = smol_llm.generate(prompt, params)
    assert done.text == full.text[:cut]
    assert done.finish_reason == "stop"
    assert done.token_ids == full.token_ids[:last + 1]
    assert done.usage.completion_tokens == last + 1
    chunks = list(smol_llm.stream(prompt, params))
    assert "".join(c.text for c in chunks) == full.text[:cut]
    seen = ""
    for c in chunks:  # nothing of the stop string is ever shown, not even for a step
        seen += c.text
        assert full.text[:cut].startswith(seen)
    assert chunks[-1].finish_reason == "stop"


def test_chat_answers(smol_llm):
    reply = smol_llm.chat(FRANCE, SamplingParams(temperature=0, max_tokens=48))
    assert "Paris" in reply.text
    assert reply.finish_reason == "stop"
    streamed = list(smol_llm.chat_stream(FRANCE, SamplingParams(temperature=0, max_tokens=48)))
    assert "".join(c.text for c in streamed) == reply.text
    rendered = smol_llm.render_chat(FRANCE)
    assert rendered.endswith("<|im_start|>assistant\n") and FRANCE[0]["content"] in rendered
    assert smol_llm.generate(rendered, SamplingParams(temperature=0, max_tokens=48)).token_ids == reply.token_ids


def test_generate_list_of_prompts(smollm_build):
    llm = LLM(smollm_build("fp32"))  # batched rows equal lone ones to the bit in fp32 (int4: test_engine)
    params = SamplingParams(temperature=0, max_tokens=6)
    prompts = ["The capital of France is", "One, two, three,"]
    done = llm.generate(prompts, params)
    assert [d.token_ids for d in done] == [llm.generate(p, params).token_ids for p in prompts]


# ---- graphs without the batching input (onnxruntime < 1.32) ----

def test_graph_without_query_seqlens(tiny_llm, tiny_build):
    import onnx
    folder = tiny_build("llama-gqa2", query_seqlens=False)
    graph = onnx.load(folder / "model.onnx", load_external_data=False).graph
    assert "query_seqlens" not in {i.name for i in graph.input}
    assert {len(n.input) for n in graph.node if n.op_type == "GroupQueryAttention"} == {9}
    llm = LLM(folder)
    assert not llm.runner.has_query_seqlens
    prompts = [TINY_PROMPT, "Another prompt, a little longer than the first one."]
    want = [tiny_llm.generate(p, GREEDY_64).token_ids for p in prompts]
    assert [c.token_ids for c in llm.generate(prompts, GREEDY_64)] == want  # the engine, without padded rows


# ---- bad input ----

def raises_param(param: str, fn):
    with pytest.raises(ParameterError) as err:
        fn()
    assert err.value.param == param and isinstance(err.value, ValueError)
    return err.value


def test_empty_prompt(tiny_llm):
    raises_param("prompt", lambda: tiny_llm.generate(""))
    stream = tiny_llm.stream("", SamplingParams(max_tokens=4))
    raises_param("prompt", lambda: next(iter(stream)))


def test_prompt_longer_than_context(tiny_llm):
    prompt = TINY_PROMPT * 40
    n = len(tiny_llm.encode(prompt))
    assert n > tiny_llm.folder.context_length
    err = raises_param("prompt", lambda: tiny_llm.generate(prompt, SamplingParams(max_tokens=4)))
    assert str(n) in str(err) and str(tiny_llm.folder.context_length) in str(err)


def test_max_tokens_past_context(tiny_llm):
    n = len(tiny_llm.encode(TINY_PROMPT))
    ctx = tiny_llm.folder.context_length
    err = raises_param("max_tokens", lambda: tiny_llm.generate(TINY_PROMPT, SamplingParams(max_tokens=ctx - n + 1)))
    assert str(ctx) in str(err)
    done = tiny_llm.generate(TINY_PROMPT, SamplingParams(temperature=0, max_tokens=ctx - n, ignore_eos=True))
    assert len(done.token_ids) == ctx - n and done.finish_reason == "length"  # exactly fills the context


@pytest.mark.parametrize("param, value", [
    ("temperature", -1), ("top_p", 0), ("top_k", -1), ("max_tokens", 0), ("min_p", 1.5),
    ("temperature", float("nan")), ("max_tokens", 2.5), ("seed", 2**63),
])
def test_invalid_sampling_values(param, value):
    raises_param(param, lambda: SamplingParams(**{param: value}))


def test_token_ids_outside_the_vocabulary(tiny_llm):
    vocab = tiny_llm.folder.vocab_size
    for param, value in (("logit_bias", {vocab: 1.0}), ("stop_token_ids", [vocab])):
        raises_param(param, lambda: tiny_llm.generate(TINY_PROMPT, SamplingParams(max_tokens=4, **{param: value})))


def test_non_string_prompt(tiny_llm):
    raises_param("prompt", lambda: tiny_llm.stream(123))
    raises_param("prompt", lambda: tiny_llm.stream(None))
    raises_param("prompt", lambda: tiny_llm.encode(b"bytes"))


@pytest.mark.parametrize("prompt", [123, None, [b"bytes"]], ids=["int", "none", "bytes-in-list"])
def test_non_string_prompt_to_generate(tiny_llm, prompt):
    raises_param("prompt", lambda: tiny_llm.generate(prompt, SamplingParams(max_tokens=4)))


@pytest.mark.parametrize("bad", [512, -3], ids=["past-vocab", "negative"])
def test_prompt_ids_outside_the_vocabulary(tiny_llm, bad):
    assert tiny_llm.folder.vocab_size == 512
    raises_param("prompt", lambda: Completion.fold(tiny_llm.stream_ids([5, bad], SamplingParams(max_tokens=4))))


def test_unknown_provider(tiny_llm):
    with pytest.raises(ProviderError) as err:
        LLM(tiny_llm.folder.path, provider="nope")
    assert "nope" in str(err.value) and "cpu" in str(err.value)


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available here")
def test_provider_missing_from_this_build(tiny_llm):
    with pytest.raises(ProviderError) as err:
        LLM(tiny_llm.folder.path, provider="cuda")
    msg = str(err.value)
    assert "cuda" in msg and "not available" in msg and "available: cpu" in msg


def test_missing_model_path(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_RUNTIME_HOME", str(tmp_path / "home"))
    missing = tmp_path / "no-such-model"
    with pytest.raises(SourceError, match="model not found") as err:
        LLM(missing)
    assert str(missing) in str(err.value)
    with pytest.raises(SourceError, match="config.json"):
        LLM(tmp_path)  # a folder that is neither built nor a Hugging Face checkpoint
    assert not (tmp_path / "home").exists()


def test_incomplete_model_folder(tiny_llm, tmp_path):
    shutil.copy(tiny_llm.folder.path / "genai_config.json", tmp_path)
    with pytest.raises(ModelFolderError, match="no tokenizer.json"):
        LLM(tmp_path)
    (tmp_path / "genai_config.json").write_text(json.dumps({}))
    with pytest.raises(ModelFolderError, match="not a built model folder"):
        LLM(tmp_path)
