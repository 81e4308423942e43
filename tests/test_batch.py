"""`llm-runtime batch`: line parsing, the output file's resume rules, the job loop, and the CLI end to end
(output shapes, parity with LLM.generate, resume after kill -9 with a torn line, clean SIGTERM)."""
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_tool_request import ASK, TOOLS, tool_model_folder

from llm_runtime import LLM, SamplingParams
from llm_runtime.batch.job import BatchJob
from llm_runtime.batch.output import BatchOutput
from llm_runtime.batch.request import BatchRequest, LineError
from llm_runtime.cli.main import main
from llm_runtime.completion import Completion, Usage

CLI = str(Path(sys.executable).parent / "llm-runtime")
GREEDY = {"max_tokens": 12, "temperature": 0}


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().split("\n") if line]


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# --- parsing -------------------------------------------------------------------------------------------------

def parse(obj) -> BatchRequest:
    return BatchRequest.parse(json.dumps(obj).encode(), 7)


def test_parse_both_input_forms():
    r = parse({"custom_id": "a", "prompt": "hi", "max_tokens": 5, "stop": "x", "logit_bias": {"3": 1}})
    assert (r.chat, r.prompt, r.params.max_tokens, r.params.stop) == (False, "hi", 5, ("x",))
    assert r.params.logit_bias == {3: 1.0}
    assert r.params.max_tokens == 5
    r = parse({"custom_id": "b", "messages": [{"role": "user", "content": "hi"}], "logprobs": True, "top_logprobs": 2})
    assert r.chat and r.params.max_tokens is None and (r.params.logprobs, r.params.top_logprobs) == (True, 2)
    r = parse({"custom_id": "c", "method": "POST", "url": "/v1/chat/completions",
               "body": {"model": "x", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 9}})
    assert r.chat and r.params.max_tokens == 9
    r = parse({"custom_id": "d", "url": "/v1/completions", "body": {"prompt": [5, 6], "logprobs": 3, "seed": 1}})
    assert (r.chat, r.prompt, r.params.top_logprobs, r.params.seed) == (False, [5, 6], 3, 1)


def test_a_line_applies_its_own_fields_over_the_jobs_params():
    """Params given in Python (BatchJob's, Ray batch's) are the base; a field the line gives wins, and replaces
    the base's whole group: a response_format the base's json_schema, a logprobs the base's top_logprobs."""
    base = SamplingParams(max_tokens=8, temperature=0, logprobs=True, top_logprobs=2, skip_special_tokens=False,
                          stop=["x"], json_schema={"type": "object"})
    line = lambda **fields: BatchRequest.parse(json.dumps({"custom_id": "a", **fields}).encode(), 1, base).params
    assert line(prompt="p") == base
    own = line(messages=[{"role": "user", "content": "hi"}], max_tokens=3, stop="y", logprobs=False,
               response_format={"type": "json_object"})
    assert (own.max_tokens, own.stop, own.logprobs, own.top_logprobs) == (3, ("y",), False, 0)
    alone = parse({"custom_id": "a", "prompt": "p", "response_format": {"type": "json_object"}}).params
    assert own.json_schema is None and own.constraint == alone.constraint
    assert (own.temperature, own.skip_special_tokens) == (0, False)  # the base's, where the line says nothing
    assert line(prompt="p", logprobs=5).top_logprobs == 5  # completions: logprobs=k alternatives


@pytest.mark.parametrize("line, cid, code, says", [
    (b"{oops", "line-7", "invalid_json", "not valid JSON"),
    (b"\xff\xfe{}", "line-7", "invalid_json", "not valid JSON"),
    (b"[1]", "line-7", "invalid_request", "not a JSON object"),
    (b'{"prompt": "x"}', "line-7", "invalid_request", "no custom_id"),
    (b'{"custom_id": 3, "prompt": "x"}', "line-7", "invalid_request", "no custom_id"),
    (b'{"custom_id": "a"}', "a", "invalid_request", "neither prompt nor messages"),
    (b'{"custom_id": "a", "prompt": "x", "messages": []}', "a", "invalid_request", "both"),
    (b'{"custom_id": "a", "prompt": "x", "temperature": -1}', "a", "invalid_request", "temperature"),
    (b'{"custom_id": "a", "prompt": "x", "top_k": "3"}', "a", "invalid_request", "top_k"),
    (b'{"custom_id": "a", "prompt": "x", "logprobs": "yes"}', "a", "invalid_request", "logprobs"),
    (b'{"custom_id": "a", "prompt": ["x", "y"]}', "a", "invalid_request", "one prompt per line"),
    (b'{"custom_id": "a", "prompt": "x", "n": 2}', "a", "invalid_request", "n must be 1"),
    (b'{"custom_id": "a", "url": "/v1/embeddings", "body": {"input": "x"}}', "a", "invalid_request", "unsupported url"),
    (b'{"custom_id": "a", "url": "/v1/completions", "body": {"messages": []}}', "a", "invalid_request", "needs prompt"),
])
def test_parse_rejects_with_the_id_to_report_under(line, cid, code, says):
    with pytest.raises(LineError) as e:
        BatchRequest.parse(line, 7)
    assert (e.value.custom_id, e.value.code) == (cid, code) and says in str(e.value)


# --- the output file -----------------------------------------------------------------------------------------

def result_line(cid: str) -> str:
    return json.dumps({"id": "batch_req_1", "custom_id": cid, "response": None, "error": {"code": "x", "message": ""}})


@pytest.mark.parametrize("tail", ['{"id": "batch_req_2", "custom_id": "c', result_line("c"), "garbage\n", "   "])
def test_output_cuts_a_torn_last_line(tmp_path, tail):
    path = tmp_path / "out.jsonl"
    good = result_line("a") + "\n\n" + result_line("b") + "\n"
    path.write_text(good + tail)  # a complete line without its newline is torn too: appending would glue onto it
    out = BatchOutput(path)
    assert out.answered == {"a", "b"}
    out.append("d", error={"code": "x", "message": ""})
    out.close()
    text = path.read_text()
    assert text.startswith(good) and [json.loads(x)["custom_id"] for x in text.split("\n") if x] == ["a", "b", "d"]


def test_output_refuses_a_bad_line_in_the_middle_and_a_second_writer(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text(result_line("a") + "\nnot json\n" + result_line("b") + "\n")
    with pytest.raises(ValueError, match="line 2 is not a batch result line"):
        BatchOutput(path)
    assert "not json" in path.read_text()  # nothing was cut
    path.write_text("")
    first = BatchOutput(path)
    with pytest.raises(ValueError, match="another batch job"):
        BatchOutput(path)
    first.close()


# --- the job loop, on a fake engine ----------------------------------------------------------------------------

class FakeHandle:
    def __init__(self, llm, prompt):
        self.llm, self.prompt, self.cancelled, self.done = llm, prompt, False, threading.Event()

    def cancel(self):
        self.cancelled = True
        self.done.set()

    def result(self):
        self.done.wait(timeout=0.01 * (len(self.prompt) % 5))  # requests end out of order
        with self.llm.lock:
            self.llm.running -= 1
        if "fail" in self.prompt:
            raise RuntimeError("generation failed: boom")
        return Completion(self.prompt.upper(), [1, 2], "length", Usage(3, 2))


class FakeLLM:
    folder = SimpleNamespace(context_length=64)

    def __init__(self):
        self.lock, self.running, self.peak, self.submitted = threading.Lock(), 0, 0, []

    def encode(self, text, special=True):
        if len(text) > 60:
            raise ValueError("prompt too long")
        return text

    def render_chat(self, messages):
        return messages[-1]["content"]

    def submit(self, prompt, params):
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        self.submitted.append((prompt, params.max_tokens))
        return FakeHandle(self, prompt)


def test_job_keeps_n_in_flight_and_writes_every_line_once(tmp_path):
    rows = [{"custom_id": f"r{i}", "prompt": "p" * i} for i in range(30)]
    rows += [{"custom_id": "f", "prompt": "fail"}, {"custom_id": "long", "prompt": "x" * 80},
             {"custom_id": "r3", "prompt": "dup"},
             {"custom_id": "chat", "messages": [{"role": "user", "content": "hey"}]}]
    out, llm, seen = BatchOutput(tmp_path / "out.jsonl"), FakeLLM(), []
    summary = BatchJob(llm, jsonl(tmp_path / "in.jsonl", rows), out, "m", 4, on_line=lambda: seen.append(1)).run()
    out.close()
    got = {o["custom_id"]: o for o in read(tmp_path / "out.jsonl")}
    assert len(got) == len(read(tmp_path / "out.jsonl")) == 33 and llm.peak == 4
    assert (summary.written, summary.errors, summary.duplicates, len(seen)) == (33, 2, ["r3"], 34)
    assert got["f"]["error"] == {"code": "generation_failed", "message": "generation failed: boom"}
    assert got["long"]["error"]["code"] == "invalid_request" and got["long"]["response"] is None
    assert got["chat"]["response"]["body"]["choices"][0]["message"]["content"] == "HEY"
    assert got["r3"]["response"]["body"]["choices"][0]["text"] == "PPP"
    assert ("ppp", None) in llm.submitted  # no max_tokens: left to the engine's one context check


def test_job_stop_cancels_in_flight_and_writes_nothing_partial(tmp_path):
    rows = [{"custom_id": f"r{i}", "prompt": "wait"} for i in range(10)]
    out, stop = BatchOutput(tmp_path / "out.jsonl"), threading.Event()

    class Slow(FakeLLM):
        def submit(self, prompt, params):
            h = super().submit(prompt, params)
            if len(self.submitted) == 3:
                threading.Timer(0.05, stop.set).start()
            h.result = lambda: (h.done.wait(), Completion("x", [], "stop", Usage(1, 0)))[1]  # runs until cancelled
            return h

    summary = BatchJob(Slow(), jsonl(tmp_path / "in.jsonl", rows), out, "m", 3, stop).run()
    out.close()
    assert summary.interrupted and summary.written == 0 and read(tmp_path / "out.jsonl") == []


# --- end to end on the tiny model ------------------------------------------------------------------------------

def mixed_rows() -> list[dict]:
    rows = []
    for i in range(12):
        if i % 4 == 0:
            rows.append({"custom_id": f"r{i}", "prompt": f"Story {i}:", **GREEDY})
        elif i % 4 == 1:
            rows.append({"custom_id": f"r{i}", "messages": [{"role": "user", "content": f"hi {i}"}], **GREEDY,
                         "prediction": {"type": "content", "content": f"hi {i}, hello"}})  # drafts, same reply
        elif i % 4 == 2:
            rows.append({"custom_id": f"r{i}", "method": "POST", "url": "/v1/completions",
                         "body": {"model": "x", "prompt": f"Item {i}", **GREEDY}})
        else:
            rows.append({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                         "body": {"messages": [{"role": "system", "content": "Be brief."},
                                               {"role": "user", "content": f"q{i}"}], **GREEDY}})
    return rows


def test_mixed_job_gives_one_line_per_custom_id(tiny_build, tmp_path, capsys):
    folder = tiny_build("llama-gqa2")
    rows = mixed_rows()
    bad = ["{oops", json.dumps({"custom_id": "r1", "prompt": "duplicate"}),
           json.dumps({"custom_id": "neg", "prompt": "x", "temperature": -1}), json.dumps({"custom_id": "empty"}),
           json.dumps({"prompt": "no id"}), json.dumps({"custom_id": "huge", "prompt": "x", "max_tokens": 1000}),
           json.dumps({"custom_id": "lp", "prompt": "Hello", "max_tokens": 3, "temperature": 0, "logprobs": 2,
                       "ignore_eos": True}),
           json.dumps({"custom_id": "nomax", "messages": [{"role": "user", "content": "go"}], "temperature": 0})]
    src, out = jsonl(tmp_path / "in.jsonl", [*rows, *bad]), tmp_path / "out.jsonl"
    assert main(["batch", str(src), "-o", str(out), "--model", str(folder), "--max-concurrency", "3"]) == 0
    lines = read(out)
    got = {o["custom_id"]: o for o in lines}
    assert len(got) == len(lines) == 12 + 7  # the duplicate's line is not answered twice
    err = capsys.readouterr().err
    assert "duplicate custom_id" in err and "r1" in err and "19 done (19 written, 0 already done, 5 errors)" in err
    assert got["line-13"]["error"]["code"] == "invalid_json"
    assert "temperature" in got["neg"]["error"]["message"] and got["neg"]["response"] is None
    assert "neither prompt nor messages" in got["empty"]["error"]["message"]
    assert got["line-17"]["error"]["code"] == "invalid_request"
    assert "context length" in got["huge"]["error"]["message"]
    lp = got["lp"]["response"]["body"]["choices"][0]["logprobs"]
    assert len(lp["token_logprobs"]) == 3 and all(1 <= len(t) <= 2 for t in lp["top_logprobs"])
    assert got["nomax"]["error"] is None  # max_tokens defaults to what the context leaves
    llm = LLM(folder)
    for r in rows:
        o = got[r["custom_id"]]
        assert set(o) == {"id", "custom_id", "response", "error"} and o["id"].startswith("batch_req_")
        assert o["error"] is None and o["response"]["status_code"] == 200
        body, req = o["response"]["body"], r.get("body", r)
        assert o["response"]["request_id"] == body["id"] and body["model"] == "model" and body["created"] > 0
        if "messages" in req:
            assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
            text = body["choices"][0]["message"]["content"]
            want = llm.chat(req["messages"], SamplingParams(**GREEDY))
        else:
            assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
            text = body["choices"][0]["text"]
            want = llm.generate(req["prompt"], SamplingParams(**GREEDY))
        assert text == want.text and body["choices"][0]["finish_reason"] == want.finish_reason
        cached = body["usage"].pop("prompt_tokens_details")["cached_tokens"]  # what lines before it left cached
        details = body["usage"].pop("completion_tokens_details", None)  # chat only (drafts may not pay in a batch)
        assert ("messages" in req) == (details is not None and details["accepted_prediction_tokens"] >= 0)
        assert body["usage"] == {"prompt_tokens": want.usage.prompt_tokens,
                                 "completion_tokens": want.usage.completion_tokens,
                                 "total_tokens": want.usage.total_tokens} and 0 <= cached < want.usage.prompt_tokens


def _run(src, out, folder, *extra):
    return subprocess.Popen([CLI, "batch", str(src), "-o", str(out), "--model", str(folder), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_lines(out: Path, n: int, proc, timeout=120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if out.exists() and out.read_bytes().count(b"\n") >= n:
            return
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    pytest.fail(f"{out} did not reach {n} lines (exit code {proc.poll()})")


@pytest.fixture(scope="module")
def long_job(tmp_path_factory):
    rows = [{"custom_id": f"k{i}", "prompt": f"Tell a story {i}", "max_tokens": 120, "ignore_eos": True}
            for i in range(40)]
    return jsonl(tmp_path_factory.mktemp("job") / "in.jsonl", rows)


def test_resume_after_kill_9_and_a_torn_line(tiny_build, long_job, tmp_path):
    folder, out = tiny_build("llama-gqa2"), tmp_path / "out.jsonl"
    proc = _run(long_job, out, folder, "--max-concurrency", "2")
    _wait_for_lines(out, 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    text = out.read_text()
    if text.endswith("\n"):  # else the kill itself tore the last line
        text += '{"id": "batch_req_x", "custom_id": "k39", "respo'  # what a kill in the middle of a write leaves
        out.write_text(text)
    first = [json.loads(line) for line in text.split("\n")[:-1]]
    assert 3 <= len(first) < 40
    proc = _run(long_job, out, folder, "--max-concurrency", "8")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    final = read(out)  # every line parses: the torn one is gone
    assert sorted(o["custom_id"] for o in final) == sorted(f"k{i}" for i in range(40))
    assert final[:len(first)] == first  # what was done stays, and is not recomputed:
    assert f"40 done ({40 - len(first)} written, {len(first)} already done, 0 errors)" in err


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_cleanly_and_the_rerun_completes(tiny_build, long_job, tmp_path, signum, code):
    folder, out = tiny_build("llama-gqa2"), tmp_path / "out.jsonl"
    proc = _run(long_job, out, folder, "--max-concurrency", "2")
    _wait_for_lines(out, 2, proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "stopped:" in err and "run the same command again to resume" in err
    assert out.read_text().endswith("\n")
    first = read(out)
    assert f"{len(first)} done" in err and all(o["error"] is None for o in first)  # cancelled ones are not written
    assert len(first) < 40
    proc = _run(long_job, out, folder)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    final = read(out)
    assert sorted(o["custom_id"] for o in final) == sorted(f"k{i}" for i in range(40)) and final[:len(first)] == first


def test_missing_input_and_unwritable_output(tiny_build, tmp_path, capsys):
    folder = tiny_build("llama-gqa2")
    assert main(["batch", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "o.jsonl"), "--model", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: input file not found") and err.count("\n") == 1
    src = jsonl(tmp_path / "in.jsonl", mixed_rows()[:1])
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["batch", str(src), "-o", str(blocker / "o.jsonl"), "--model", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write") and err.count("\n") == 1


def test_tool_and_response_format_lines_answer_as_the_api(tmp_path):
    folder = tool_model_folder(tmp_path / "hermes", "hermes")
    params = {"temperature": 1.0, "seed": 2, "max_tokens": 120}
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    rows = [{"custom_id": "call", "messages": ASK, "tools": TOOLS, "tool_choice": "required",
             "parallel_tool_calls": False, **params},
            {"custom_id": "json", "method": "POST", "url": "/v1/chat/completions",
             "body": {"messages": ASK, "response_format": {"type": "json_schema", "json_schema": {
                 "name": "r", "schema": schema, "strict": True}}, **params}},
            {"custom_id": "bad", "messages": ASK, "response_format": {"type": "json_schema", "json_schema": {
                "name": "r", "schema": {"not": {}}}}}]
    src, out = jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    assert main(["batch", str(src), "-o", str(out), "--model", str(folder)]) == 0
    got = {o["custom_id"]: o for o in read(out)}
    choice = got["call"]["response"]["body"]["choices"][0]
    want = LLM(folder).chat(ASK, SamplingParams(**params), tools=TOOLS, tool_choice="required",
                            parallel_tool_calls=False)
    assert choice["finish_reason"] == want.finish_reason == "tool_calls" and choice["message"]["content"] is None
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in choice["message"]["tool_calls"]] == \
        [(c.name, c.arguments) for c in want.tool_calls]
    reply = got["json"]["response"]["body"]["choices"][0]["message"]["content"]
    assert json.loads(reply) in ({"ok": True}, {"ok": False})
    assert "response_format cannot be enforced" in got["bad"]["error"]["message"]


def test_a_line_without_temperature_takes_the_models_recommended_one(tiny_build, tmp_path):
    """As on the server: a model whose generation_config.json recommends temperature 0 answers a line that
    leaves temperature out greedily, seed or not; Python params given as the base still win."""
    import shutil

    folder = shutil.copytree(tiny_build("llama-gqa2"), tmp_path / "model")
    gen = folder / "generation_config.json"
    gen.write_text(json.dumps({**json.loads(gen.read_text()), "temperature": 0.0}))
    llm = LLM(folder)
    rows = [{"custom_id": "greedy", "prompt": "Once upon", "max_tokens": 12, "ignore_eos": True, "temperature": 0},
            *({"custom_id": f"s{seed}", "prompt": "Once upon", "max_tokens": 12, "ignore_eos": True, "seed": seed}
              for seed in range(3))]
    out = BatchOutput(tmp_path / "out.jsonl")
    BatchJob(llm, jsonl(tmp_path / "in.jsonl", rows), out, "m", 4).run()
    out.close()
    texts = {o["custom_id"]: o["response"]["body"]["choices"][0]["text"] for o in read(tmp_path / "out.jsonl")}
    assert set(texts.values()) == {texts["greedy"]}
    assert BatchRequest.parse(json.dumps(rows[1]).encode(), 1, SamplingParams(), {"temperature": 0.0}).params \
        .temperature == 1.0
