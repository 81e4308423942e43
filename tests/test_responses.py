"""/v1/responses over real HTTP on loopback (a `llm-runtime serve` process), driven by the official openai client:
plain and streamed replies equal the library's chat, previous_response_id over three turns (and the prompt cache
it reuses), store=false, retrieve and delete, per-key ownership, a restart, concurrent writers, refused fields."""
import asyncio
import json
import re
import time

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter
from server_process import serving

from llm_runtime import LLM, SamplingParams
from llm_runtime.server.response_store import ResponseStore

KEYS = ("responses-key-a", "responses-key-b")
GREEDY = dict(model="tiny", temperature=0, max_output_tokens=12, extra_body={"ignore_eos": True})
EVENT = TypeAdapter(ResponseStreamEvent)


def metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {KEYS[0]}"}).text
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


@pytest.fixture(scope="module")
def folder(tiny_build):
    return tiny_build("llama-gqa2")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("responses-data")


@pytest.fixture(scope="module")
def server(folder, data_dir):
    with serving(folder, "--api-key", KEYS[0], "--api-key", KEYS[1], "--served-model-name", "tiny",
                 "--data-dir", str(data_dir), "--max-concurrency", "4") as base:
        yield base


def client_for(base: str, key: str = KEYS[0]) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def client(server):
    return client_for(server)


@pytest.fixture(scope="module")
def llm(folder):
    return LLM(folder)


def chat_text(llm, messages, max_tokens=12) -> str:
    return llm.chat(messages, SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)).text


def test_plain_reply_equals_the_library_chat(client, llm):
    r = client.responses.create(input="What is the capital of France?", instructions="Answer briefly.", **GREEDY)
    Response.model_validate(r.to_dict())
    want = chat_text(llm, [{"role": "system", "content": "Answer briefly."},
                           {"role": "user", "content": "What is the capital of France?"}])
    assert r.output_text == want and r.id.startswith("resp_") and r.object == "response" and r.model == "tiny"
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"  # ignore_eos: 12 tokens
    assert [o.type for o in r.output] == ["message"] and r.output[0].role == "assistant"
    assert r.usage.output_tokens == 12 and r.usage.total_tokens == r.usage.input_tokens + 12
    assert r.usage.input_tokens == len(llm.encode(llm.render_chat([
        {"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is the capital of France?"}
    ]), special=False))
    assert r.instructions == "Answer briefly." and r.store is True and r.temperature == 0 and r.max_output_tokens == 12


def test_input_items_and_an_eos_ending_completes(client, llm):
    items = [{"role": "developer", "content": "Be terse."},
             {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"},
                                                             {"type": "input_text", "text": "there"}]}]
    want_ids = llm.chat([{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi\nthere"}],
                        SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)).token_ids
    stop = next(t for i, t in enumerate(want_ids) if i >= 3 and t not in want_ids[:i])
    r = client.responses.create(input=items, model="tiny", temperature=0, max_output_tokens=12,
                                extra_body={"stop_token_ids": [stop]})
    assert r.status == "completed" and r.incomplete_details is None
    assert r.output_text == llm.tokenizer.decode(want_ids[:want_ids.index(stop)]) and r.output[0].status == "completed"


def test_stream_events_in_order_and_the_reply_in_pieces(client):
    full = client.responses.create(input="Tell me a story.", **GREEDY)
    events = list(client.responses.create(input="Tell me a story.", stream=True, **GREEDY))
    for e in events:
        EVENT.validate_python(e.to_dict())
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.incomplete"]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert "".join(e.delta for e in deltas) == events[-4].text == full.output_text
    item_id = events[2].item.id
    assert all(e.item_id == item_id and e.output_index == 0 and e.content_index == 0 for e in deltas)
    assert events[0].response.status == "in_progress" and events[0].response.output == []
    final = events[-1].response
    assert final.id == events[0].response.id and final.output[0].id == item_id
    assert final.usage.model_dump(exclude={"input_tokens_details"}) == full.usage.model_dump(
        exclude={"input_tokens_details"})  # cached_tokens: the stream may reuse the first request's prompt
    assert client.responses.retrieve(final.id).output_text == full.output_text  # stored before the last event


def test_the_stream_helper_accumulates_a_completed_response(client, llm):
    """The client's `responses.stream()` checks every event against its snapshot (ids, indexes, order)."""
    ids = llm.chat([{"role": "user", "content": "Count."}], SamplingParams(max_tokens=10, temperature=0,
                                                                           ignore_eos=True)).token_ids
    stop = next(t for i, t in enumerate(ids) if i >= 3 and t not in ids[:i])
    with client.responses.stream(model="tiny", input="Count.", temperature=0, max_output_tokens=10,
                                 extra_body={"stop_token_ids": [stop]}) as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == "completed" and final.output_text == "".join(texts) == llm.tokenizer.decode(
        ids[:ids.index(stop)])


def test_previous_response_id_over_three_turns_reuses_the_prompt_cache(client, server, llm):
    conversation, previous, previous_prompt_tokens = [], None, 0
    for turn, text in enumerate(["What is the capital of France?", "And of Spain?", "Which is larger?"]):
        conversation.append({"role": "user", "content": text})
        prompt = llm.encode(llm.render_chat([{"role": "system", "content": "Be brief."}, *conversation]),
                            special=False)
        before = metric(server, "llm_prompt_tokens_reused_total")
        r = client.responses.create(input=text, instructions="Be brief.", previous_response_id=previous, **GREEDY)
        reused = metric(server, "llm_prompt_tokens_reused_total") - before
        want = chat_text(llm, [{"role": "system", "content": "Be brief."}, *conversation])
        assert r.output_text == want and r.previous_response_id == previous and r.usage.input_tokens == len(prompt)
        if turn:  # the stored history is the engine's cached prompt of the turn before, up to its reply
            assert reused >= previous_prompt_tokens, (turn, reused)
        assert r.usage.input_tokens_details.cached_tokens == reused  # this request's count, in its usage
        conversation.append({"role": "assistant", "content": r.output_text})
        previous, previous_prompt_tokens = r.id, len(prompt)


def test_instructions_are_not_carried_on(client, llm):
    first = client.responses.create(input="Hi", instructions="Speak French.", **GREEDY)
    second = client.responses.create(input="More", previous_response_id=first.id, **GREEDY)
    assert second.instructions is None
    assert second.output_text == chat_text(llm, [{"role": "user", "content": "Hi"},
                                                 {"role": "assistant", "content": first.output_text},
                                                 {"role": "user", "content": "More"}])


def test_store_false_keeps_nothing(client):
    r = client.responses.create(input="Hi", store=False, **GREEDY)
    assert r.store is False and r.output_text
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(input="Again", previous_response_id=r.id, **GREEDY)
    assert (e.value.body["param"], e.value.body["code"]) == ("previous_response_id", "previous_response_not_found")


def test_retrieve_and_delete(client):
    r = client.responses.create(input="Hi", metadata={"topic": "greeting"}, **GREEDY)
    got = client.responses.retrieve(r.id)
    assert got.to_dict() == r.to_dict() and got.metadata == {"topic": "greeting"}
    client.responses.delete(r.id)
    for call in (client.responses.retrieve, client.responses.delete):
        with pytest.raises(openai.NotFoundError) as e:
            call(r.id)
        assert e.value.body["code"] == "not_found"
    with pytest.raises(openai.BadRequestError):
        client.responses.create(input="Again", previous_response_id=r.id, **GREEDY)


def test_another_key_sees_nothing(client, server):
    r = client.responses.create(input="Secret", **GREEDY)
    other = client_for(server, KEYS[1])
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(r.id)
    with pytest.raises(openai.BadRequestError) as e:
        other.responses.create(input="Tell me", previous_response_id=r.id, **GREEDY)
    assert e.value.body["code"] == "previous_response_not_found"
    assert client.responses.retrieve(r.id).output_text == r.output_text  # still there for its owner
    mine = other.responses.create(input="Mine", **GREEDY)
    assert other.responses.retrieve(mine.id).id == mine.id
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(mine.id)


def test_concurrent_requests_all_stored(server):
    async def go():
        c = openai.AsyncOpenAI(base_url=server + "/v1", api_key=KEYS[0], max_retries=0)
        made = await asyncio.gather(*[c.responses.create(input=f"Topic {i}", **GREEDY) for i in range(12)])
        got = await asyncio.gather(*[c.responses.retrieve(r.id) for r in made])
        await c.close()
        return made, got

    made, got = asyncio.run(go())
    assert len({r.id for r in made}) == 12 and [g.output_text for g in got] == [r.output_text for r in made]


def test_stored_responses_survive_a_restart(folder, tmp_path, llm):
    with serving(folder, "--api-key", KEYS[0], "--served-model-name", "tiny", "--data-dir", str(tmp_path)) as base:
        first = client_for(base).responses.create(input="Remember me.", **GREEDY)
    with serving(folder, "--api-key", KEYS[0], "--served-model-name", "tiny", "--data-dir", str(tmp_path)) as base:
        c = client_for(base)
        assert c.responses.retrieve(first.id).to_dict() == first.to_dict()
        second = c.responses.create(input="Who am I?", previous_response_id=first.id, **GREEDY)
    assert second.output_text == chat_text(llm, [{"role": "user", "content": "Remember me."},
                                                 {"role": "assistant", "content": first.output_text},
                                                 {"role": "user", "content": "Who am I?"}])
    assert (tmp_path / "responses.sqlite3").exists()


def test_logprobs_when_included(client):
    r = client.responses.create(input="Hi", include=["message.output_text.logprobs"], top_logprobs=2, **GREEDY)
    lps = r.output[0].content[0].logprobs
    assert len(lps) == 12 and all(len(t.top_logprobs) == 2 and t.token == t.top_logprobs[0].token for t in lps)
    assert client.responses.create(input="Hi", **GREEDY).output[0].content[0].logprobs is None


@pytest.mark.parametrize("fields, param, code", [
    ({"text": {"format": {"type": "json_schema", "schema": {"type": "object"}}}}, "text",
     "missing_required_parameter"),
    ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {"not": {}}}}}, "text", None),
    ({"tools": [{"type": "web_search"}]}, "tools", None),
    ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools", None),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", None),  # chat's shape
    ({"tools": [{"type": "function", "name": "f", "parameters": "{}"}]}, "tools", None),
    ({"tools": {"type": "function", "name": "f"}}, "tools", None),
    ({"tool_choice": "required"}, "tool_choice", None),
    ({"tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function", "name": "g"}},
     "tool_choice", None),
    ({"tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "mcp", "server_label": "x"}},
     "tool_choice", None),
    ({"parallel_tool_calls": "yes"}, "parallel_tool_calls", None),
    ({"conversation": "conv_1"}, "conversation", "unsupported_parameter"),
    ({"made_up": 1}, "made_up", "unknown_parameter"),
    ({"input": [{"type": "input_image", "image_url": "x"}]}, "input", None),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input", None),
    ({"input": [{"role": "wizard", "content": "x"}]}, "input", None),
    ({"input": []}, "input", None),
    ({"max_output_tokens": 0}, "max_output_tokens", None),
    ({"max_output_tokens": 100_000}, "max_output_tokens", "context_length_exceeded"),
    ({"include": ["everything"]}, "include", None),
    ({"metadata": {"k": 1}}, "metadata", None),
    ({"safety_identifier": "x" * 65}, "safety_identifier", None),
    ({"prompt_cache_key": 5}, "prompt_cache_key", None),
    ({"presence_penalty": 3}, "presence_penalty", None),
])
def test_refused_fields_are_400_naming_them(server, fields, param, code):
    body = {"model": "tiny", "input": "Hi", **fields}
    r = httpx.post(server + "/v1/responses", json=body, headers={"Authorization": f"Bearer {KEYS[0]}"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error" and (code is None or err["code"] == code)


def test_neutral_values_run(client):
    r = client.responses.create(input="Hi", text={"format": {"type": "text"}}, tools=[], tool_choice="auto",
                                truncation="disabled", parallel_tool_calls=True, user="u1", **GREEDY)
    assert r.output_text == client.responses.create(input="Hi", **GREEDY).output_text


def test_unknown_model_and_missing_key(server, client):
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.create(model="other", input="Hi")
    assert e.value.body["code"] == "model_not_found"
    r = httpx.post(server + "/v1/responses", json={"model": "tiny", "input": "Hi"})
    assert r.status_code == 401


def test_a_stream_left_early_frees_its_slot(server):
    body = {"model": "tiny", "input": "Go on.", "stream": True, "max_output_tokens": 200, "ignore_eos": True}
    generated = metric(server, "llm_generation_tokens_total")
    with httpx.stream("POST", server + "/v1/responses", json=body,
                      headers={"Authorization": f"Bearer {KEYS[0]}"}, timeout=60) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        first = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
        assert first["type"] == "response.created"
    for _ in range(100):
        if metric(server, "llm_running_sequences") == 0:
            break
        time.sleep(0.05)
    assert metric(server, "llm_running_sequences") == 0
    assert metric(server, "llm_generation_tokens_total") - generated < 200  # cancelled, not run to the end
    with pytest.raises(openai.NotFoundError):  # and not stored
        client_for(server).responses.retrieve(first["response"]["id"])


def test_a_failure_after_streaming_began_is_response_failed(tmp_path):
    """An engine that fails after its first chunk: the stream ends in response.failed with the text so far (stored
    as failed), and the JSON reply is a 500."""
    from test_server import FailingLLM

    from llm_runtime.server.app import create_app

    async def go():
        app = create_app(FailingLLM(), "m", data_dir=tmp_path)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            body = {"model": "m", "input": "Hi"}
            return await c.post("/v1/responses", json={**body, "stream": True}), \
                await c.post("/v1/responses", json=body)

    stream, whole = asyncio.run(go())
    events = [json.loads(line[6:]) for line in stream.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events][-2:] == ["response.output_text.delta", "response.failed"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert failed["output"][0]["content"][0]["text"] == "Hi" and "the step failed" in failed["error"]["message"]
    assert whole.status_code == 500 and whole.json()["error"]["type"] == "server_error"
    assert ResponseStore(tmp_path / "responses.sqlite3").get("", failed["id"])["status"] == "failed"


def test_input_items_list_what_each_response_was_given(client, server):
    items = [{"role": "developer", "content": "Be brief."},
             {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
             {"type": "message", "role": "assistant", "content": "Hello!"},
             {"role": "user", "content": "Tell me more."}]
    r = client.responses.create(input=items, **GREEDY)
    listed = client.responses.input_items.list(r.id, order="asc")
    assert [(i.type, i.role, i.content[0].text) for i in listed.data] == [
        ("message", "developer", "Be brief."), ("message", "user", "Hi"), ("message", "assistant", "Hello!"),
        ("message", "user", "Tell me more.")]
    assert listed.data[2].content[0].type == "output_text" and listed.data[0].content[0].type == "input_text"
    assert len({i.id for i in listed.data}) == 4 and not listed.has_more
    newest_first = client.responses.input_items.list(r.id, limit=3)
    assert [i.id for i in newest_first.data] == [i.id for i in listed.data[::-1][:3]] and newest_first.has_more
    assert [i.id for i in newest_first] == [i.id for i in listed.data[::-1]]  # the client pages on with `after`
    follow = client.responses.create(input="And?", previous_response_id=r.id, **GREEDY)
    only = client.responses.input_items.list(follow.id).data
    assert [(i.role, i.content[0].text) for i in only] == [("user", "And?")]  # its own input, not the history
    with pytest.raises(openai.NotFoundError):
        client_for(server, KEYS[1]).responses.input_items.list(r.id)


def test_text_format_json_schema_is_enforced(client):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    fmt = {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}
    r = client.responses.create(model="tiny", input="Is it?", text={"format": fmt}, temperature=1.0,
                                extra_body={"seed": 2}, max_output_tokens=120)
    assert json.loads(r.output_text) in ({"ok": True}, {"ok": False}) and r.status == "completed"
    assert r.text.format.type == "json_schema" and r.text.format.name == "answer"
    events = list(client.responses.create(model="tiny", input="Is it?", text={"format": fmt}, temperature=1.0,
                                          extra_body={"seed": 2}, max_output_tokens=120, stream=True))
    assert events[-1].type == "response.completed" and events[-1].response.output_text == r.output_text
    plain = client.responses.create(model="tiny", input="Is it?", text={"format": {"type": "json_object"}},
                                    temperature=1.0, extra_body={"seed": 2}, max_output_tokens=120)
    assert plain.output_text.startswith("{")  # a JSON object, cut off at max_output_tokens by the random model


def test_a_part_the_model_cannot_take_names_the_item_in_one_line(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="tiny", max_output_tokens=2, input=[
            {"role": "user", "content": [{"type": "input_text", "text": "What is this?"},
                                         {"type": "input_image", "image_url": "http://example.com/a.png"}]}])
    assert e.value.body["param"] == "input"
    assert e.value.body["message"] == ("input[0].content[1]: this model is text-only; 'input_image' parts are not "
                                       "supported")


def test_a_tool_call_history_without_tools_runs(client, llm):
    """function_call and function_call_output items without `tools`: the prompt is chat's for the same history."""
    items = [{"role": "user", "content": "What is 2 + 3?"},
             {"type": "function_call", "call_id": "call_1", "name": "add", "arguments": '{"a": 2, "b": 3}'},
             {"type": "function_call_output", "call_id": "call_1", "output": "5"}]
    r = client.responses.create(model="tiny", input=items, max_output_tokens=3)
    chat = [{"role": "user", "content": "What is 2 + 3?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "5"}]
    assert r.usage.input_tokens == len(llm.encode(llm.render_chat(chat), special=False))
