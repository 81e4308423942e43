"""The server over real HTTP on loopback (a `llm-runtime serve` process), driven by the official openai client."""
import asyncio
import json
import re
import threading
import time
from types import SimpleNamespace

import httpx
import openai
import pytest
from server_process import serving

from llm_runtime import LLM, Chunk, Completion, SamplingParams
from llm_runtime.engine import EngineError

KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
MSGS = [{"role": "user", "content": "Name the capital city of France."}]  # no near-tie (test_llm.FRANCE)


def metric(base: str, name: str) -> float:
    return float(re.search(rf"^{name} (\S+)$", httpx.get(f"{base}/metrics", headers=AUTH).text, re.M).group(1))


def settle(base: str) -> None:
    """Wait (briefly) until the engine holds no sequence: nothing running, waiting or cached."""
    names = ("llm_running_sequences", "llm_waiting_sequences", "llm_cache_used_tokens")
    for _ in range(100):
        if not any(metric(base, n) for n in names):
            return
        time.sleep(0.05)
    pytest.fail({n: metric(base, n) for n in names})


@pytest.fixture(scope="session")
def server(tiny_build):
    folder = tiny_build("llama-gqa2")
    with serving(folder, "--api-key", KEY, "--served-model-name", "tiny", "--max-concurrency", "4") as base:
        yield base, folder


@pytest.fixture(scope="session")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="session")
def llm(server):
    return LLM(server[1])


# ---- replies equal the library's; streaming and not agree ----

def test_chat_equals_llm_generate(client, llm):
    r = client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=24, temperature=0,
                                       extra_body={"ignore_eos": True})
    want = llm.chat(MSGS, SamplingParams(max_tokens=24, temperature=0, ignore_eos=True))
    assert r.choices[0].message.content == want.text and r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason == want.finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (want.usage.prompt_tokens, 24)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == "tiny" and r.created > 0


def test_completion_equals_llm_generate_with_logprobs(client, llm):
    r = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=20, temperature=0, logprobs=2)
    want = llm.generate("Once upon a time", SamplingParams(max_tokens=20, temperature=0, logprobs=True, top_logprobs=2))
    c = r.choices[0]
    assert c.text == want.text and r.object == "text_completion" and r.id.startswith("cmpl-")
    assert c.logprobs.token_logprobs == pytest.approx([lp.logprob for lp in want.logprobs], abs=1e-4)
    assert all(len(top) == 2 for top in c.logprobs.top_logprobs)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens == len(llm.encode(
        "Once upon a time")) + len(want.token_ids)


def test_long_prompt_in_chunks_equals_llm_generate(client, llm):
    """A prompt over the engine's prefill chunk (128 tokens) runs in several steps, the first sampling nothing."""
    ids = [(7 * i) % 500 + 3 for i in range(200)]
    r = client.completions.create(model="tiny", prompt=ids, max_tokens=16, temperature=0,
                                  extra_body={"ignore_eos": True})
    want = Completion.fold(llm.stream_ids(ids, SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)))
    assert r.choices[0].text == want.text and r.usage.prompt_tokens == 200


def test_the_next_turn_reuses_the_history_the_engine_holds(client, server, llm):
    params = dict(model="tiny", max_tokens=16, temperature=0, extra_body={"ignore_eos": True})
    first = client.chat.completions.create(messages=MSGS, **params).choices[0].message.content
    turn = MSGS + [{"role": "assistant", "content": first}, {"role": "user", "content": "And of Spain?"}]
    before = metric(server[0], "llm_prompt_tokens_reused_total")
    r = client.chat.completions.create(messages=turn, **params)
    assert r.choices[0].message.content == llm.chat(turn, SamplingParams(max_tokens=16, temperature=0,
                                                                         ignore_eos=True)).text
    reused = metric(server[0], "llm_prompt_tokens_reused_total") - before
    assert reused >= len(llm.encode(llm.render_chat(MSGS), special=False))  # at least the first turn's prompt
    assert r.usage.prompt_tokens_details.cached_tokens == reused  # the request's own count, in its usage
    before = metric(server[0], "llm_prompt_tokens_reused_total")
    chunks = list(client.chat.completions.create(messages=turn, stream=True, stream_options={"include_usage": True},
                                                 **params))
    reused = metric(server[0], "llm_prompt_tokens_reused_total") - before
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == reused > 0


def test_chat_stream_is_the_reply_in_pieces(client):
    kw = dict(model="tiny", messages=MSGS, max_tokens=24, temperature=0)
    full = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.id for c in chunks} == {chunks[0].id} and all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == full.choices[0].message.content
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishing) == 1 and finishing[0].choices[0].finish_reason == full.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump(exclude={"prompt_tokens_details"}) == \
        full.usage.model_dump(exclude={"prompt_tokens_details"})  # cached_tokens: the second may reuse the first's
    assert all(c.usage is None for c in chunks[:-1])
    no_usage = list(client.chat.completions.create(**kw, stream=True))
    assert all(c.choices and c.usage is None for c in no_usage)


def test_completion_stream_and_prompt_token_ids(client, llm):
    kw = dict(model="tiny", prompt="The quick brown fox", max_tokens=16, temperature=0)
    full = client.completions.create(**kw)
    assert "".join(c.choices[0].text for c in client.completions.create(**kw, stream=True)) == full.choices[0].text
    by_ids = client.completions.create(**{**kw, "prompt": llm.encode("The quick brown fox")})
    assert by_ids.choices[0].text == full.choices[0].text


def test_n_seeds_stop_and_logprobs(client):
    kw = dict(model="tiny", messages=MSGS, max_tokens=16, temperature=1.0, seed=5, extra_body={"ignore_eos": True})
    a = client.chat.completions.create(**kw, n=3)
    b = client.chat.completions.create(**kw, n=3)
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert sorted(c.index for c in a.choices) == [0, 1, 2] and len({c.message.content for c in a.choices}) > 1
    one = client.chat.completions.create(**kw)
    assert one.choices[0].message.content == a.choices[0].message.content  # choice 0 uses the seed itself
    assert (a.usage.prompt_tokens, a.usage.completion_tokens) == (one.usage.prompt_tokens, 3 * 16)
    streamed = {}
    for c in client.chat.completions.create(**kw, n=3, stream=True):
        for ch in c.choices:
            streamed[ch.index] = streamed.get(ch.index, "") + (ch.delta.content or "")
    assert [streamed[i] for i in range(3)] == [c.message.content for c in a.choices]

    greedy = client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=24, temperature=0).choices[0]
    stop = greedy.message.content[5:9]
    cut = client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=24, temperature=0, stop=[stop])
    assert cut.choices[0].message.content == greedy.message.content.split(stop)[0]
    assert cut.choices[0].finish_reason == "stop"

    lp = client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=4, temperature=0,
                                        logprobs=True, top_logprobs=3, extra_body={"ignore_eos": True})
    content = lp.choices[0].logprobs.content
    assert len(content) == 4 and all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in content)
    assert all(t.token == t.top_logprobs[0].token for t in content)  # greedy picks the most likely


def test_async_client(server):
    async def go():
        c = openai.AsyncOpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0)
        kw = dict(model="tiny", messages=MSGS, max_tokens=8, temperature=0)
        full, stream, text = await asyncio.gather(
            c.chat.completions.create(**kw), c.chat.completions.create(**kw, stream=True),
            c.completions.create(model="tiny", prompt="Hello", max_tokens=8, temperature=0))
        parts = [x.choices[0].delta.content or "" async for x in stream if x.choices]
        with pytest.raises(openai.NotFoundError):
            await c.completions.create(model="other", prompt="Hello")
        await c.close()
        return full.choices[0].message.content, "".join(parts), text.choices[0].text

    full, streamed, text = asyncio.run(go())
    assert full == streamed and isinstance(text, str)


def test_default_model_answers_sensibly(smollm_build):
    """The real default model (SmolLM2 int4) through the server; also CORS when an origin is given."""
    with serving(smollm_build("int4"), "--served-model-name", "smol", "--cors-origin", "http://app.test") as base:
        c = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0)
        r = c.chat.completions.create(model="smol", messages=MSGS, max_tokens=24, temperature=0)
        assert "paris" in r.choices[0].message.content.lower()
        pre = httpx.options(base + "/v1/chat/completions", headers={
            "Origin": "http://app.test", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "http://app.test"


# ---- errors ----

def test_errors_map_to_client_exceptions(client, server):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=MSGS)
    assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server[0] + "/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=MSGS, temperature=5)
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=100_000)
    assert e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="word " * 400)
    assert e.value.body["code"] == "context_length_exceeded"
    assert [m.id for m in client.models.list().data] == ["tiny"] and client.models.retrieve("tiny").id == "tiny"
    assert httpx.get(server[0] + "/health").status_code == 200  # public
    assert httpx.get(server[0] + "/v1/models").status_code == 401
    assert httpx.get(server[0] + "/health", headers={"Origin": "http://x.test"}).headers.get(
        "access-control-allow-origin") is None  # CORS off unless origins are given


def test_full_queue_is_429_with_retry_after(tiny_build):
    with serving(tiny_build("llama-gqa2"), "--served-model-name", "tiny", "--max-concurrency", "1",
                 "--max-waiting", "1") as base:
        c = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0)
        with pytest.raises(openai.RateLimitError) as e:  # 3 choices: one runs, one waits, one does not fit
            c.chat.completions.create(model="tiny", messages=MSGS, n=3, max_tokens=200, extra_body={"ignore_eos": True})
        assert e.value.response.headers["retry-after"] == "1" and e.value.body["code"] == "rate_limit_exceeded"
        settle(base)
        assert c.chat.completions.create(model="tiny", messages=MSGS, max_tokens=4).choices


USER = '"messages": [{"role": "user", "content": "x"}]'


@pytest.mark.parametrize("path,body,param", [
    ("chat", b"{not json", None),
    ("chat", b"", None),
    ("chat", b"[1, 2]", None),
    ("chat", b'{"messages": []}', "model"),
    ("chat", b'{"model": "tiny", "messages": "hi"}', "messages"),
    ("chat", b'{"model": "tiny", "messages": []}', "messages"),
    ("chat", b'{"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}', "messages"),
    ("chat", b'{"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}', "messages"),
    ("chat", b'{"model": "tiny", "messages": [{"role": "user"}]}', "messages"),
    ("chat", b'{"model": "tiny", ' + USER.encode() + b', "n": 99}', "n"),
    ("chat", b'{"model": "tiny", ' + USER.encode() + b', "n": "2"}', "n"),
    ("chat", b'{"model": "tiny", ' + USER.encode() + b', "temperature": "hot"}', "temperature"),
    ("chat", b'{"model": "tiny", ' + USER.encode() + b', "top_p": 0}', "top_p"),
    ("chat", b'{"model": "tiny", ' + USER.encode() + b', "max_tokens": 0}', "max_tokens"),
    ("chat", b'{"model": "tiny", ' + USER.encode() + b', "min_tokens": 50, "max_tokens": 10}', "min_tokens"),
    ("chat", b'{"model": "tiny", ' + USER.encode() + b', "seed": 99999999999999999999}', "seed"),
    ("chat", b'{"model": "tiny", ' + USER.encode() + b', "top_logprobs": 50, "logprobs": true}', "top_logprobs"),
    ("chat", b'{"model": "tiny", ' + USER.encode() + b', "top_logprobs": 2}', "top_logprobs"),
    ("chat", b'{"model": "tiny", ' + USER.encode() + b', "stop": ["a","b","c","d","e"]}', "stop"),
    ("chat", b'{"model": "tiny", ' + USER.encode() + b', "stop": "' + b"s" * 300 + b'"}', "stop"),
    ("chat", b'{"model": "tiny", ' + USER.encode() + b', "logit_bias": {"zz": 1}}', "logit_bias"),
    ("chat", b'{"model": "tiny", ' + USER.encode() + b', "logit_bias": {"5": 500}}', "logit_bias"),
    ("chat", b'{"model": "tiny", ' + USER.encode() + b', "logit_bias": {"100000": 1}}', "logit_bias"),
    ("completions", b'{"model": "tiny", "prompt": 5}', "prompt"),
    ("completions", b'{"model": "tiny", "prompt": [1, -2]}', "prompt"),
    ("completions", b'{"model": "tiny", "prompt": [100000]}', "prompt"),
    ("completions", b'{"model": "tiny", "prompt": "x", "logprobs": 99}', "logprobs"),
    # found by fuzzing (tests/test_fuzz.py); both were 500s
    ("chat", b'{"model": "tiny", ' + USER.encode() + b', "tool_choice": {"type": "function", "function": []}}',
     "tool_choice"),
    ("chat", b'{"model": "tiny", ' + USER.encode() + b', "regex": "a{1000000}"}', "regex"),  # fails at token 1
    ("completions", b'{"model": "tiny", "prompt": "x", "regex": "a{1000000}"}', "regex"),
])
def test_bad_requests_are_400_and_openai_shaped(server, path, body, param):
    r = httpx.post(f"{server[0]}/v1/{'chat/completions' if path == 'chat' else 'completions'}", content=body,
                   headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param


def test_size_limits_auth_and_unknown_fields(server):
    base = server[0]
    for body in (b"x" * (5 << 20), iter([b"x" * (1 << 20)] * 5)):  # a declared length, then a chunked body
        r = httpx.post(base + "/v1/completions", content=body, headers=AUTH)
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = httpx.post(base + "/v1/completions", json={"model": "tiny", "prompt": "x"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.post(base + "/v1/completions", json={"model": "tiny", "prompt": "x"},
                   headers={"Authorization": "Bearer x"})
    assert r.status_code == 401
    for field, value, code in (("best_of", 3, "unsupported_value"), ("suffix", "y", "unsupported_parameter"),
                               ("made_up", {"a": 1}, "unknown_parameter")):  # refused by name, never dropped
        r = httpx.post(base + "/v1/completions", headers=AUTH, json={"model": "tiny", "prompt": "x", field: value})
        assert r.status_code == 400 and (r.json()["error"]["param"], r.json()["error"]["code"]) == (field, code)
    r = httpx.post(base + "/v1/completions", headers=AUTH, json={
        "model": "tiny", "prompt": "x", "max_tokens": 2, "best_of": 1, "user": "u1"})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 2
    parts = [{"type": "text", "text": "hi"}, {"type": "text", "text": "there"}]
    r = httpx.post(base + "/v1/chat/completions", headers=AUTH, json={
        "model": "tiny", "max_tokens": 2, "messages": [{"role": "developer", "content": "be brief"},
                                                         {"role": "user", "content": parts}]})
    assert r.status_code == 200
    r = httpx.get(base + "/v1/nothing", headers=AUTH)
    assert r.status_code == 404 and "error" in r.json()


def test_health_and_v1_are_503_while_loading():
    from llm_runtime.server.app import create_app

    async def go():
        transport = httpx.ASGITransport(app=create_app(None, "m"))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            health = await c.get("/health")
            chat = await c.post("/v1/chat/completions", json={"model": "m", "messages": MSGS})
            return health, chat, await c.get("/metrics")

    health, chat, metrics = asyncio.run(go())
    assert health.status_code == chat.status_code == 503 and chat.json()["error"]["code"] == "model_loading"
    assert metrics.status_code == 200


class FailingLLM:
    """Just enough of LLM for the app: every request yields one chunk, then the engine fails."""

    class Handle:
        def __init__(self):
            self.cancelled = False

        async def __aiter__(self):
            yield Chunk("Hi", (5,))
            raise EngineError("the step failed")

        def cancel(self):
            self.cancelled = True

    folder = SimpleNamespace(context_length=64)
    engine = SimpleNamespace(stats=lambda: SimpleNamespace(healthy=True))

    def __init__(self):
        self.handles = []

    def render_chat(self, messages):
        return "text"

    def encode(self, text, special=True):
        return [1, 2, 3]

    def submit(self, ids, params, loop=None, key=""):
        self.handles.append(self.Handle())
        return self.handles[-1]


def test_failure_after_streaming_began_is_an_error_event_then_done():
    from llm_runtime.server.app import create_app

    llm = FailingLLM()

    async def go():
        transport = httpx.ASGITransport(app=create_app(llm, "m"))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            body = {"model": "m", "messages": MSGS, "n": 2}
            return await c.post("/v1/chat/completions", json={**body, "stream": True}), \
                await c.post("/v1/chat/completions", json=body)

    stream, whole = asyncio.run(go())
    events = [line[6:] for line in stream.text.splitlines() if line.startswith("data: ")]
    assert stream.status_code == 200 and '"content":"Hi"' in events[2] and events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["type"] == "server_error" and "the step failed" in error["message"]
    assert whole.status_code == 500 and "the step failed" in whole.json()["error"]["message"]
    assert all(h.cancelled for h in llm.handles[:2])  # the other choice stops too


# ---- load, disconnects (fuzzing: test_fuzz.py) ----

def test_concurrent_streams_with_disconnects_leave_nothing_behind(server):
    base = server[0]
    done, errors = [], []
    generated_before = metric(base, "llm_generation_tokens_total")

    def one(i):
        quits = i % 3 == 0
        try:
            with httpx.stream("POST", base + "/v1/chat/completions", timeout=120, headers=AUTH, json={
                    "model": "tiny", "messages": [{"role": "user", "content": f"story {i}"}], "stream": True,
                    "max_tokens": 200 if quits else 40, "ignore_eos": True}) as r:
                events = []
                for line in r.iter_lines():
                    if quits and len(events) == 3:
                        return  # disconnect mid-stream
                    if line.startswith("data: "):
                        events.append(line[6:])
                assert events[-1] == "[DONE]" and '"finish_reason":"length"' in events[-2]
                done.append(i)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and sorted(done) == [i for i in range(16) if i % 3]
    settle(base)
    # the 6 clients that left asked for 200 tokens each: cancelled, they generated far fewer
    assert metric(base, "llm_generation_tokens_total") - generated_before < 10 * 40 + 6 * 100
    assert metric(base, "llm_time_to_first_token_seconds_count") > 0


# ---- plain errors, and what the template can render ----

ADD = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}
TOOL_HISTORY = [{"role": "user", "content": "What is 2 + 3?"},
                {"role": "assistant", "content": None, "tool_calls": [ADD]},
                {"role": "tool", "tool_call_id": "call_1", "content": "5"}]


@pytest.mark.parametrize("part", [{"type": "image_url", "image_url": {"url": "http://example.com/a.png"}},
                                  {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                                  {"type": "file", "file": {"file_id": "file-1"}}])
def test_a_part_the_model_cannot_take_is_one_plain_line(client, part):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", max_tokens=2, messages=[
            {"role": "user", "content": [{"type": "text", "text": "What is this?"}, part]}])
    error = e.value.body
    assert error["param"] == "messages"
    assert error["message"] == (f"messages[0].content[1]: this model is text-only; {part['type']!r} parts are "
                                "not supported")


def test_a_tool_call_history_without_tools_is_rendered_in_the_generic_format(client, llm):
    """The tiny model's template has no tool support: the earlier call and its result are the generic format's
    JSON turns, as they are when tools are offered."""
    r = client.chat.completions.create(model="tiny", messages=TOOL_HISTORY, max_tokens=3)
    prompt = llm.render_chat(TOOL_HISTORY)
    assert '{"tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 3}}]}' in prompt
    assert '{"tool_result": {"name": "add", "content": "5"}}' in prompt
    assert r.usage.prompt_tokens == len(llm.encode(prompt, special=False))
