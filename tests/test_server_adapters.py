"""LoRA adapters through the server's doors (a real `llm-runtime serve` on loopback, the real `openai` client):
`model: adapter` gives the greedy tokens of transformers + PEFT and of the LLM with SamplingParams(adapter=...) on
chat, completions and responses; /v1/models lists each adapter with its parent; the load and unload endpoints (off
without --allow-adapter-updates, behind the key, a bad adapter refused with nothing loaded, an unload that lets
running streams finish); a batch file that mixes base and adapter lines; a clashing name stops the start."""
import json
import subprocess
import threading

import httpx
import openai
import pytest
from llm_runtime.model_builder.contract import LORA_TARGETS
from lora_reference import peft_greedy
from peft_adapters import peft_model, save_peft
from server_process import CLI, launched

from llm_runtime import LLM, SamplingParams
from llm_runtime.cli.main import main

CASE = "llama-gqa2"
KEY = "sk-doors"
PROMPT = [5, 17, 33, 100, 7, 250, 9, 11, 3, 42, 61, 8]
TOKENS = 12
ADAPTERS = {"attn": dict(seed=1, r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
            "mlp": dict(seed=2, r=16, lora_alpha=16, target_modules=["gate_proj", "up_proj", "down_proj"])}


@pytest.fixture(scope="module")
def folders(tiny_hf, tmp_path_factory):
    """name -> a PEFT folder of a random adapter on the tiny model."""
    root = tmp_path_factory.mktemp("adapters")
    return {name: save_peft(tiny_hf(CASE), root / name, **spec) for name, spec in ADAPTERS.items()}


@pytest.fixture(scope="module")
def build(tiny_build):
    return tiny_build(CASE, lora_targets=LORA_TARGETS)


@pytest.fixture(scope="module")
def expected(tiny_hf, folders):
    """name (None: the base) -> transformers + PEFT's greedy tokens after PROMPT."""
    tokens = {}
    for name, folder in [(None, folders["attn"]), *folders.items()]:
        model = peft_model(tiny_hf(CASE), folder)
        tokens[name] = peft_greedy(model, name and "default", PROMPT, TOKENS)[0]
    assert len({tuple(t) for t in tokens.values()}) == 3  # each adapter changes the greedy tokens
    return tokens


@pytest.fixture(scope="module")
def llm(build, folders):
    return LLM(build, adapters=folders)


@pytest.fixture(scope="module")
def server(build, folders):
    loras = [f"{name}={path}" for name, path in folders.items()]
    with launched(build, "--served-model-name", "tiny", "--lora", *loras[:1], "--lora-modules", *loras[1:],
                  "--allow-adapter-updates", "--api-key", KEY) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key=KEY, max_retries=0, timeout=120)


def greedy(adapter=None) -> SamplingParams:
    return SamplingParams(temperature=0, max_tokens=TOKENS, ignore_eos=True, adapter=adapter)


def post(server, path: str, body: dict, key: str = KEY) -> httpx.Response:
    return httpx.post(f"{server.base}{path}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=120)


def test_model_adapter_gives_the_tokens_of_peft_and_of_the_llm(client, llm, expected):
    for name, model in ((None, "tiny"), ("attn", "attn"), ("mlp", "mlp")):
        local = llm.submit(PROMPT, greedy(name)).result()
        assert local.token_ids == expected[name], name
        reply = client.completions.create(model=model, prompt=PROMPT, max_tokens=TOKENS, temperature=0,
                                          extra_body={"ignore_eos": True})
        assert reply.model == model and reply.choices[0].text == local.text, name


def test_chat_and_responses_name_the_adapter_as_their_model(client, llm):
    messages = [{"role": "user", "content": "Hello there"}]
    for name in ("attn", "mlp"):
        local = llm.chat(messages, greedy(name)).text
        assert local != llm.chat(messages, greedy()).text
        chat = client.chat.completions.create(model=name, messages=messages, max_tokens=TOKENS, temperature=0,
                                              extra_body={"ignore_eos": True})
        assert chat.choices[0].message.content == local
        streamed = client.chat.completions.create(model=name, messages=messages, max_tokens=TOKENS, temperature=0,
                                                  stream=True, extra_body={"ignore_eos": True})
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == local
        response = client.responses.create(model=name, input="Hello there", max_output_tokens=TOKENS,
                                           temperature=0, extra_body={"ignore_eos": True}, store=False)
        assert response.output_text == local


def test_models_lists_each_adapter_with_its_parent_and_root(client, folders):
    cards = {m.id: m for m in client.models.list().data}
    assert list(cards) == ["tiny", "attn", "mlp"]
    assert getattr(cards["tiny"], "parent", None) is None
    for name, folder in folders.items():
        assert (cards[name].parent, cards[name].root) == ("tiny", str(folder))
        assert client.models.retrieve(name).parent == "tiny"


def test_load_and_unload_endpoints(server, client, folders, expected):
    body = {"lora_name": "again", "lora_path": str(folders["mlp"])}
    assert post(server, "/v1/load_lora_adapter", body, key="wrong").status_code == 401
    assert post(server, "/v1/load_lora_adapter", body).status_code == 200
    reply = client.completions.create(model="again", prompt=PROMPT, max_tokens=TOKENS, temperature=0,
                                      extra_body={"ignore_eos": True})
    assert reply.choices[0].text == client.completions.create(
        model="mlp", prompt=PROMPT, max_tokens=TOKENS, temperature=0, extra_body={"ignore_eos": True}).choices[0].text
    for bad, param in (({"lora_name": "x", "lora_path": str(server.base)}, "lora_path"),  # no such file
                       ({"lora_name": "again", "lora_path": str(folders["attn"])}, "lora_name"),  # name taken
                       ({"lora_name": "tiny", "lora_path": str(folders["attn"])}, "lora_name")):  # the model's name
        r = post(server, "/v1/load_lora_adapter", bad)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    assert [m.id for m in client.models.list().data] == ["tiny", "attn", "mlp", "again"]
    assert post(server, "/v1/unload_lora_adapter", {"lora_name": "again"}).status_code == 200
    r = post(server, "/v1/unload_lora_adapter", {"lora_name": "again"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "adapter_not_found"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="again", prompt=PROMPT, max_tokens=2)
    metrics = httpx.get(f"{server.base}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    assert 'llm_lora_adapters_loaded{model="tiny"} 2' in metrics


def test_an_adapter_that_does_not_fit_is_a_400_and_nothing_is_loaded(server, client, tiny_hf, tmp_path):
    head = save_peft(tiny_hf(CASE), tmp_path / "head", r=4, lora_alpha=8, target_modules=["lm_head"])  # no site
    r = post(server, "/v1/load_lora_adapter", {"lora_name": "misfit", "lora_path": str(head)})
    assert r.status_code == 400 and "lm_head" in r.json()["error"]["message"], r.text
    assert [m.id for m in client.models.list().data] == ["tiny", "attn", "mlp"]


def test_unloading_an_adapter_lets_its_running_streams_finish(server, client, folders):
    assert post(server, "/v1/load_lora_adapter", {"lora_name": "brief", "lora_path": str(folders["attn"])}
                ).status_code == 200
    texts, started = [], threading.Barrier(4)

    def stream() -> None:
        chunks = client.completions.create(model="brief", prompt=PROMPT, max_tokens=240, temperature=0, stream=True,
                                           extra_body={"ignore_eos": True})
        parts = []
        for i, c in enumerate(chunks):
            if i == 0:
                started.wait(timeout=60)
            parts.append(c.choices[0].text if c.choices else "")
        texts.append("".join(parts))

    threads = [threading.Thread(target=stream) for _ in range(3)]
    for t in threads:
        t.start()
    started.wait(timeout=60)  # every stream has its first chunk
    assert post(server, "/v1/unload_lora_adapter", {"lora_name": "brief"}).status_code == 200
    for t in threads:
        t.join(timeout=120)
    whole = client.completions.create(model="attn", prompt=PROMPT, max_tokens=240, temperature=0,
                                      extra_body={"ignore_eos": True}).choices[0].text
    assert texts == [whole] * 3


def test_the_endpoints_are_404_without_the_flag_and_a_clashing_name_stops_the_start(build, folders):
    with launched(build, "--served-model-name", "tiny", "--lora", f"attn={folders['attn']}") as s:
        body = {"lora_name": "x", "lora_path": str(folders["mlp"])}
        assert httpx.post(f"{s.base}/v1/load_lora_adapter", json=body).status_code == 404
        assert httpx.post(f"{s.base}/v1/unload_lora_adapter", json={"lora_name": "attn"}).status_code == 404
    done = subprocess.run([CLI, "serve", "--model", str(build), "--served-model-name", "tiny", "--lora",
                           f"tiny={folders['attn']}", "--port", "0"], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "the adapter name 'tiny' is a served model's name" in done.stderr


def test_a_batch_file_mixes_base_and_adapter_lines(build, folders, llm, tmp_path):
    lines = [{"custom_id": str(i), "prompt": PROMPT, "max_tokens": TOKENS, "temperature": 0, "ignore_eos": True,
              **({"model": name} if name else {})} for i, name in enumerate([None, "attn", "mlp", "other"])]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main(["batch", str(src), "-o", str(out), "--model", str(build),
                 *(f"--lora={name}={path}" for name, path in folders.items())]) == 0
    bodies = {r["custom_id"]: r["response"]["body"] for r in map(json.loads, out.read_text().splitlines())}
    for i, name in enumerate([None, "attn", "mlp", None]):
        assert bodies[str(i)]["choices"][0]["text"] == llm.submit(PROMPT, greedy(name)).result().text, i
    assert bodies["1"]["model"] == "attn" and bodies["3"]["model"] != "other"


def test_generate_takes_lora_and_adapter(build, folders, llm, capsys):
    argv = ["generate", "--model", str(build), "--lora", f"mlp={folders['mlp']}", "--max-tokens", str(TOKENS),
            "--ignore-eos", "Hello there"]
    assert main([*argv, "--adapter", "mlp"]) == 0
    text = llm.generate("Hello there", greedy("mlp")).text
    assert capsys.readouterr().out == text + "\n" and text != llm.generate("Hello there", greedy()).text
    assert main([*argv, "--adapter", "nope"]) != 0
    assert "Unknown adapter 'nope' (loaded: mlp)" in capsys.readouterr().err
