"""Several models in one `llm-runtime serve` (server/models.py), over real HTTP with the official client: routing by
`model`, interleaved streams, unknown names, and --max-loaded's load on first use and least-recently-used unload."""
import asyncio
import re
import shutil
import subprocess

import httpx
import openai
import pytest
from server_process import CLI, serving

from llm_runtime import LLM, SamplingParams

MSGS = [{"role": "user", "content": "Name the capital city of France."}]  # no near-tie (test_llm.FRANCE)
GREEDY = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)
CASES = {"alpha": "llama-gqa2", "beta": "qwen2-gqa", "gamma": "llama-mqa"}


@pytest.fixture(scope="module")
def folders(tiny_build):
    return {name: tiny_build(case) for name, case in CASES.items()}


@pytest.fixture(scope="module")
def llms(folders):
    return {name: LLM(folder) for name, folder in folders.items()}


def serve_args(folders, names, *extra):
    """`--model A --model B ...` with one --served-model-name each; `serving` gives the first --model itself."""
    args = [str(folders[names[0]])]
    for name in names[1:]:
        args += ["--model", str(folders[name])]
    for name in names:
        args += ["--served-model-name", name]
    return args + list(extra)


def loaded(base: str) -> dict[str, int]:
    text = httpx.get(base + "/metrics").text
    return {m: int(v) for m, v in re.findall(r'^llm_model_loaded\{model="([^"]+)"\} (\d+)$', text, re.M)}


async def stream_chat(client, model: str) -> list[str]:
    stream = await client.chat.completions.create(model=model, messages=MSGS, max_tokens=16, temperature=0,
                                                  stream=True, extra_body={"ignore_eos": True})
    return [c.choices[0].delta.content or "" async for c in stream if c.choices]


def want(llms, name: str) -> str:
    return llms[name].chat(MSGS, GREEDY).text


def test_two_models_route_by_name_with_interleaved_streams(folders, llms):
    with serving(*serve_args(folders, ["alpha", "beta"])) as base:
        c = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0)
        assert [m.id for m in c.models.list().data] == ["alpha", "beta"]
        assert c.models.retrieve("beta").id == "beta"
        assert loaded(base) == {"alpha": 1, "beta": 1}  # no --max-loaded: both loaded at start

        async def go():
            ac = openai.AsyncOpenAI(base_url=base + "/v1", api_key="none", max_retries=0)
            out = await asyncio.gather(*[stream_chat(ac, name) for name in ("alpha", "beta", "alpha", "beta")])
            await ac.close()
            return out

        pieces = asyncio.run(go())
        assert ["".join(p) for p in pieces] == [want(llms, n) for n in ("alpha", "beta", "alpha", "beta")]
        assert want(llms, "alpha") != want(llms, "beta")  # two different models answered
        r = c.responses.create(model="beta", input=MSGS[0]["content"], temperature=0, max_output_tokens=16,
                               extra_body={"ignore_eos": True})
        assert r.output_text == want(llms, "beta") and r.model == "beta"
        with pytest.raises(openai.NotFoundError) as e:
            c.chat.completions.create(model="delta", messages=MSGS)
        assert e.value.body == {"message": "the model 'delta' does not exist", "type": "invalid_request_error",
                                "param": "model", "code": "model_not_found"}
        with pytest.raises(openai.NotFoundError):
            c.models.retrieve("delta")
        text = httpx.get(base + "/metrics").text
        assert re.search(r'^llm_generation_tokens_total\{model="alpha"\} (\d+)$', text, re.M)
        assert str(folders["alpha"]) not in httpx.get(base + "/v1/models").text  # names, never paths


def test_max_loaded_one_swaps_models_as_requests_come(folders, llms):
    with serving(*serve_args(folders, ["alpha", "beta"], "--max-loaded", "1")) as base:
        c = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0)
        assert loaded(base) == {"alpha": 0, "beta": 0}  # loaded on first use
        kw = dict(messages=MSGS, max_tokens=16, temperature=0, extra_body={"ignore_eos": True})
        assert c.chat.completions.create(model="alpha", **kw).choices[0].message.content == want(llms, "alpha")
        assert loaded(base) == {"alpha": 1, "beta": 0}
        assert c.chat.completions.create(model="beta", **kw).choices[0].message.content == want(llms, "beta")
        assert loaded(base) == {"alpha": 0, "beta": 1}

        async def go():  # interleaved: each waits until the other's engine is idle, then takes the one slot
            ac = openai.AsyncOpenAI(base_url=base + "/v1", api_key="none", max_retries=0)
            out = await asyncio.gather(*[stream_chat(ac, name) for name in ("alpha", "beta", "alpha")])
            await ac.close()
            return out

        pieces = asyncio.run(go())
        assert ["".join(p) for p in pieces] == [want(llms, n) for n in ("alpha", "beta", "alpha")]
        assert sum(loaded(base).values()) == 1


def test_max_loaded_unloads_the_least_recently_used(folders):
    with serving(*serve_args(folders, ["alpha", "beta", "gamma"], "--max-loaded", "2")) as base:
        c = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0)

        def ask(name):
            c.completions.create(model=name, prompt="Hello", max_tokens=2)

        ask("alpha"), ask("beta"), ask("alpha")  # beta is now the least recently used
        assert loaded(base) == {"alpha": 1, "beta": 1, "gamma": 0}
        ask("gamma")
        assert loaded(base) == {"alpha": 1, "beta": 0, "gamma": 1}
        ask("beta")
        assert loaded(base) == {"alpha": 0, "beta": 1, "gamma": 1}


@pytest.mark.parametrize("args, message", [
    (["--model", "a", "--model", "b", "--served-model-name", "x"], "one --served-model-name per --model"),
    (["--model", "a", "--model", "b", "--served-model-name", "x", "--served-model-name", "x"],
     "two models are served as 'x'"),
    (["--model", "./one/model", "--model", "./two/model"], "two models are served as 'model'"),  # paths
    (["--model", "a", "--model", "b", "--ray"], "--ray serves one model"),
    (["--model", "a", "--max-loaded", "0"], "--max-loaded"),
])
def test_bad_model_flags_are_one_error_line(args, message):
    run = subprocess.run([CLI, "serve", *args], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr


def test_a_model_that_fails_to_load_is_a_500_and_the_others_serve(folders, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(folders["alpha"], broken)
    args = [str(broken), "--model", str(folders["beta"]), "--served-model-name", "broken",
            "--served-model-name", "beta", "--max-loaded", "1"]
    with serving(*args) as base:
        (broken / "model.onnx").unlink()  # resolved at start, gone before its first request
        c = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0)
        with pytest.raises(openai.InternalServerError) as e:
            c.completions.create(model="broken", prompt="Hello", max_tokens=2)
        assert e.value.body["code"] == "model_load_failed" and "broken" in e.value.body["message"]
        assert c.completions.create(model="beta", prompt="Hello", max_tokens=2).choices
        assert loaded(base) == {"broken": 0, "beta": 1}


def test_the_default_model_beside_a_tiny_one(smollm_build, folders, llms):
    """The real default model (SmolLM2 int4) and a tiny one in one server: interleaved streams each equal their
    own model's greedy reply, and the Responses API on the default model answers and continues a conversation
    (its second turn equal to the library's chat over the whole history)."""
    args = [str(smollm_build("int4")), "--model", str(folders["alpha"]), "--served-model-name", "smol",
            "--served-model-name", "alpha"]
    with serving(*args) as base:
        async def go():
            ac = openai.AsyncOpenAI(base_url=base + "/v1", api_key="none", max_retries=0)
            out = await asyncio.gather(*[stream_chat(ac, name) for name in ("smol", "alpha", "smol", "alpha")])
            await ac.close()
            return out

        pieces = ["".join(p) for p in asyncio.run(go())]
        assert pieces[1] == pieces[3] == want(llms, "alpha") and pieces[0] == pieces[2]
        assert "paris" in pieces[0].lower()
        c = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0)
        first = c.responses.create(model="smol", input=MSGS[0]["content"], temperature=0,
                                   max_output_tokens=24)
        assert "paris" in first.output_text.lower()
        second = c.responses.create(model="smol", input="And what is the capital of Spain?", temperature=0,
                                    max_output_tokens=24, previous_response_id=first.id)
        history = [MSGS[0],
                   {"role": "assistant", "content": first.output_text},
                   {"role": "user", "content": "And what is the capital of Spain?"}]
        smol = LLM(smollm_build("int4"))
        assert second.output_text == smol.chat(history, SamplingParams(max_tokens=24, temperature=0)).text
