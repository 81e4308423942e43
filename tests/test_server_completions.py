"""server/completions.py over real HTTP: legacy completions in every prompt form (n per prompt, OpenAI's choice
order, text_offset, echo), agent histories on a tools-capable template, replies valid against OpenAI's published
schemas, LangChain's legacy OpenAI class, /v1/models and /metrics access, and an event loop that a 1 MB prompt
does not block."""
import copy
import json
import shutil
import threading
import time
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest
from server_process import serving

from llm_runtime import LLM, SamplingParams

KEY = "completions-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
FIXTURES = Path(__file__).parent / "fixtures"
MSGS = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = dict(model="tiny", max_tokens=6, temperature=0, extra_body={"ignore_eos": True})


def _nullable(node):
    """OpenAI's document mixes OpenAPI 3.0's `nullable: true` into JSON Schema: as a null branch."""
    if isinstance(node, list):
        return [_nullable(x) for x in node]
    if not isinstance(node, dict):
        return node
    node = {k: _nullable(v) for k, v in node.items()}
    if node.pop("nullable", False):
        return {"anyOf": [node, {"type": "null"}]}
    return node


SPEC = _nullable(json.loads((FIXTURES / "openai_openapi" / "responses.json").read_text()))
# Legacy completions stream CreateCompletionResponse objects whose finish_reason is null until a choice's last
# chunk and whose usage is null but in the last one (as chat chunks document it); the document, written for the
# whole reply, says otherwise, so streamed chunks are checked with those two nulls allowed.
STREAMED_COMPLETION = copy.deepcopy(SPEC["components"]["schemas"]["CreateCompletionResponse"])
_choice = STREAMED_COMPLETION["properties"]["choices"]["items"]["properties"]
_choice["finish_reason"] = {"anyOf": [_choice["finish_reason"], {"type": "null"}]}
STREAMED_COMPLETION["properties"]["usage"] = {"anyOf": [STREAMED_COMPLETION["properties"]["usage"], {"type": "null"}]}


def valid(instance: dict, name: str) -> None:
    schema = {**SPEC, "$ref": f"#/components/schemas/{name}"} if isinstance(name, str) else {**SPEC, **name}
    jsonschema.Draft202012Validator(schema).validate(instance)


@pytest.fixture(scope="module")
def qwen_folder(tiny_build, tmp_path_factory):
    """A tiny random Qwen2 built folder that carries Qwen2.5's real (tools-capable) chat template."""
    folder = tmp_path_factory.mktemp("qwen-tools") / "model"
    shutil.copytree(tiny_build("qwen2-gqa"), folder)
    shutil.copy(FIXTURES / "templates" / "qwen2.5-instruct.jinja", folder / "chat_template.jinja")
    return folder


@pytest.fixture(scope="module")
def server(qwen_folder):
    with serving(qwen_folder, "--api-key", KEY, "--served-model-name", "tiny") as base:
        yield base


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def llm(qwen_folder):
    return LLM(qwen_folder)


def post(server: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server}/v1/{path}", json=body, headers=AUTH, timeout=120)


# ---- legacy completions ----

@pytest.mark.parametrize("form", ["strings", "token lists"])
def test_several_prompts_n_each_in_openai_order(client, llm, form):
    prompts = ["Once upon a time", "The quick brown fox", "Hello"]
    sent = prompts if form == "strings" else [llm.encode(p) for p in prompts]
    r = client.completions.create(prompt=sent, n=2, **GREEDY)
    assert [c.index for c in r.choices] == list(range(6))
    for i, p in enumerate(prompts):  # choice index = prompt * n + j; greedy choices of one prompt agree
        alone = client.completions.create(prompt=p, **GREEDY).choices[0].text
        assert r.choices[2 * i].text == r.choices[2 * i + 1].text == alone
    assert r.usage.prompt_tokens == sum(len(llm.encode(p)) for p in prompts)
    assert r.usage.completion_tokens == 6 * 6
    streamed = {}
    for chunk in client.completions.create(prompt=sent, n=2, stream=True, **GREEDY):
        for c in chunk.choices:
            streamed[c.index] = streamed.get(c.index, "") + c.text
    assert [streamed[i] for i in range(6)] == [c.text for c in r.choices]


def test_text_offset_and_echo(client, llm):
    prompt = "Once upon a time"
    r = client.completions.create(prompt=prompt, logprobs=2, **GREEDY).choices[0]
    lp = r.logprobs
    assert "".join(lp.tokens) == r.text and len(lp.tokens) == 6
    assert lp.text_offset == [len("".join(lp.tokens[:k])) for k in range(6)]  # where each token starts
    echoed = client.completions.create(prompt=prompt, echo=True, **GREEDY).choices[0]
    assert echoed.text == prompt + r.text
    by_ids = client.completions.create(prompt=llm.encode(prompt), echo=True, **GREEDY).choices[0]
    assert by_ids.text == echoed.text
    streamed = "".join(c.choices[0].text for c in client.completions.create(prompt=prompt, echo=True, stream=True,
                                                                             **GREEDY))
    assert streamed == echoed.text
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(prompt=prompt, echo=True, logprobs=1, **GREEDY)
    assert (e.value.body["param"], e.value.body["code"]) == ("echo", "unsupported_value")


# ---- agent histories ----

AGENT = [
    {"role": "system", "content": "You call tools."},
    {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}], "name": "ann"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
]


def test_agent_history_is_rendered_by_the_models_template(client, llm):
    r = client.chat.completions.create(messages=AGENT, **GREEDY)
    want = llm.chat(AGENT, SamplingParams(max_tokens=6, temperature=0, ignore_eos=True))
    assert r.choices[0].message.content == want.text
    rendered = llm.render_chat(AGENT)
    assert '"arguments": {"city": "Paris"}' in rendered and "<tool_response>\n18 C, sunny" in rendered
    assert r.usage.prompt_tokens == len(llm.encode(rendered, special=False))


@pytest.mark.parametrize("messages, says", [
    (AGENT[:2] + [{"role": "tool", "content": "x"}], "messages[2]: a tool message needs tool_call_id"),
    (AGENT[:2] + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{bad"}}]}], "must be a JSON object"),
])
def test_bad_agent_messages_are_400_naming_the_message(server, messages, says):
    r = post(server, "chat/completions", {"model": "tiny", "messages": messages, "max_tokens": 2})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages" and says in r.json()["error"]["message"]
    assert "jinja" not in r.text.lower() and "dict object" not in r.text


# ---- reply shapes ----

def test_replies_validate_against_openais_schema(server):
    chat = {"model": "tiny", "messages": MSGS, "max_tokens": 4, "ignore_eos": True}
    for body in (chat, {**chat, "n": 2, "logprobs": True, "top_logprobs": 2}):
        reply = post(server, "chat/completions", body).json()
        valid(reply, "CreateChatCompletionResponse")
        assert reply["choices"][0]["message"]["refusal"] is None and reply["choices"][0]["message"]["annotations"] == []
        stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
        for chunk in sse(server, "chat/completions", stream):
            valid(chunk, "CreateChatCompletionStreamResponse")
    text = {"model": "tiny", "prompt": ["a b", "c"], "max_tokens": 4, "ignore_eos": True}
    for body in (text, {**text, "logprobs": 2}, {**text, "echo": True}):
        valid(post(server, "completions", body).json(), "CreateCompletionResponse")
        for chunk in sse(server, "completions", {**body, "stream": True, "stream_options": {"include_usage": True}}):
            valid(chunk, STREAMED_COMPLETION)
    valid(httpx.get(server + "/v1/models", headers=AUTH).json(), "ListModelsResponse")
    valid(post(server, "completions", {"model": "tiny", "prompt": "x", "suffix": "y"}).json(), "ErrorResponse")


def sse(server: str, path: str, body: dict) -> list[dict]:
    with httpx.stream("POST", f"{server}/v1/{path}", json=body, headers=AUTH, timeout=120) as r:
        data = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


# ---- LangChain's legacy LLM class ----

def test_langchain_openai_llm_invoke_and_batch(server, client):
    from langchain_openai import OpenAI

    lc = OpenAI(base_url=server + "/v1", api_key=KEY, model="tiny", max_tokens=6, temperature=0, max_retries=0)
    prompts = ["Once upon a time", "The quick brown fox", "Hello"]
    direct = [client.completions.create(model="tiny", prompt=p, max_tokens=6, temperature=0).choices[0].text
              for p in prompts]
    assert lc.invoke(prompts[0]) == direct[0]
    assert lc.batch(prompts) == direct
    result = lc.generate(prompts)  # one request, prompt as a list of strings
    assert [g[0].text for g in result.generations] == direct


# ---- models and metrics ----

def test_models_show_the_served_name_and_metrics_need_the_key(qwen_folder, server):
    assert httpx.get(server + "/metrics").status_code == 401
    assert httpx.get(server + "/metrics", headers=AUTH).status_code == 200
    with serving(qwen_folder, "--api-key", KEY, "--public-metrics") as base:
        assert httpx.get(base + "/metrics").status_code == 200
        ids = [m["id"] for m in httpx.get(base + "/v1/models", headers=AUTH).json()["data"]]
        assert ids == ["model"]  # the folder's name, not its path
        assert "/" not in httpx.get(base + "/v1/models/model", headers=AUTH).json()["id"]


# ---- the event loop ----

def test_a_1mb_prompt_does_not_block_a_concurrent_stream(smollm_build):
    """While a 1 MB prompt is tokenized (then refused: it is far over the context), a stream running beside it
    keeps its pace: its largest gap between chunks is a small part of the time the big request took."""
    big = ("The quick brown fox jumps over the lazy dog. " * 25000)[:1_000_000]
    with serving(smollm_build("int4"), "--served-model-name", "smol") as base:
        arrivals, started = [], threading.Event()

        def stream():
            body = {"model": "smol", "messages": MSGS, "max_tokens": 600, "ignore_eos": True, "stream": True}
            with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=300) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        arrivals.append(time.perf_counter())
                        if len(arrivals) == 20:
                            started.set()

        reader = threading.Thread(target=stream)
        reader.start()
        assert started.wait(120)
        t0 = time.perf_counter()
        r = httpx.post(base + "/v1/completions", json={"model": "smol", "prompt": big, "max_tokens": 1}, timeout=300)
        t1 = time.perf_counter()
        reader.join(300)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert arrivals[-1] > t1, "the stream ended before the big request did: nothing overlapped"
    during = [b - a for a, b in zip(arrivals, arrivals[1:]) if b > t0 and a < t1]
    print(f"big request {t1 - t0:.2f} s, largest gap meanwhile {max(during):.3f} s over {len(during)} chunks")
    assert max(during) < 0.3 * (t1 - t0)
