"""`llm-runtime batch`: output shape, parity with LLM.generate, resume after kill -9, clean SIGTERM."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llm_runtime import LLM, SamplingParams
from llm_runtime.cli import main

CLI = str(Path(sys.executable).parent / "llm-runtime")


def write_jsonl(path: Path, n: int, extra=()) -> list[dict]:
    rows = []
    for i in range(n):
        if i % 3 == 0:
            rows.append({"custom_id": f"r{i}", "prompt": f"Story {i}:", "max_tokens": 12, "temperature": 0})
        elif i % 3 == 1:
            rows.append({"custom_id": f"r{i}", "messages": [{"role": "user", "content": f"hi {i}"}],
                         "max_tokens": 12, "temperature": 0})
        else:
            rows.append({"custom_id": f"r{i}", "method": "POST", "url": "/v1/completions",
                         "body": {"prompt": f"Item {i}", "max_tokens": 12, "temperature": 0}})
    lines = [json.dumps(r) for r in rows] + list(extra)
    path.write_text("\n".join(lines) + "\n")
    return rows


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_mixed_job_gives_one_line_per_custom_id(tiny_build, tmp_path, capsys):
    folder = tiny_build("llama-gqa2")
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    rows = write_jsonl(src, 9, extra=["{oops", json.dumps({"custom_id": "r1", "prompt": "duplicate"}),
                                      json.dumps({"custom_id": "neg", "prompt": "x", "temperature": -1}),
                                      json.dumps({"custom_id": "empty"}), json.dumps({"prompt": "no id"})])
    assert main(["batch", str(src), "-o", str(out), "--model", str(folder), "--max-concurrency", "3"]) == 0
    got = {o["custom_id"]: o for o in read(out)}
    assert len(got) == len(read(out)) == 9 + 4  # 9 requests, 4 error lines (the duplicate is not repeated)
    assert got["line-10"]["error"]["code"] == "invalid_json"
    assert "temperature" in got["neg"]["error"]["message"] and got["neg"]["response"] is None
    assert "neither prompt nor messages" in got["empty"]["error"]["message"]
    assert got["line-14"]["error"]["code"] == "invalid_request"
    assert "duplicate" in capsys.readouterr().err
    llm = LLM(folder)
    for r in rows:
        o = got[r["custom_id"]]
        assert o["error"] is None and o["response"]["status_code"] == 200 and o["id"].startswith("batch_req_")
        body = o["response"]["body"]
        if "messages" in r:
            assert body["object"] == "chat.completion"
            text = body["choices"][0]["message"]["content"]
            want = llm.chat(r["messages"], SamplingParams(max_tokens=12, temperature=0)).text
        else:
            prompt = r.get("prompt") or r["body"]["prompt"]
            assert body["object"] == "text_completion"
            text = body["choices"][0]["text"]
            want = llm.generate(prompt, SamplingParams(max_tokens=12, temperature=0)).text
        assert text == want
        assert body["usage"]["completion_tokens"] <= 12 and body["choices"][0]["finish_reason"] in ("stop", "length")


def _run(src, out, folder, *extra):
    return subprocess.Popen([CLI, "batch", str(src), "-o", str(out), "--model", str(folder), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_lines(out: Path, n: int, proc, timeout=120) -> None:
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if out.exists() and out.read_text().count("\n") >= n:
            return
        time.sleep(0.05)


@pytest.fixture(scope="module")
def long_job(tmp_path_factory):
    src = tmp_path_factory.mktemp("job") / "in.jsonl"
    rows = [{"custom_id": f"k{i}", "prompt": f"Tell a story {i}", "max_tokens": 120, "ignore_eos": True}
            for i in range(40)]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return src


def test_resume_after_kill_9_and_a_torn_line(tiny_build, long_job, tmp_path):
    folder, out = tiny_build("llama-gqa2"), tmp_path / "out.jsonl"
    proc = _run(long_job, out, folder, "--max-concurrency", "2")
    _wait_for_lines(out, 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = read(out)
    assert 3 <= len(first) < 40
    with open(out, "a") as f:  # what a kill in the middle of a write leaves behind
        f.write('{"id": "batch_req_x", "custom_id": "k3')
    proc = _run(long_job, out, folder, "--max-concurrency", "8")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    final = read(out)
    assert sorted(o["custom_id"] for o in final) == sorted(f"k{i}" for i in range(40))
    assert final[:len(first)] == first  # what was done stays, nothing recomputed
    assert f"{40 - len(first)} written, {len(first)} already done" in err


def test_sigterm_stops_cleanly_and_the_rerun_completes(tiny_build, long_job, tmp_path):
    folder, out = tiny_build("llama-gqa2"), tmp_path / "out.jsonl"
    proc = _run(long_job, out, folder, "--max-concurrency", "2")
    _wait_for_lines(out, 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "run the same command again" in err
    assert out.read_text().endswith("\n")
    done = {o["custom_id"] for o in read(out)}
    assert all(o["error"] is None for o in read(out))  # cancelled requests are not written as results
    proc = _run(long_job, out, folder)
    proc.communicate(timeout=300)
    final = [o["custom_id"] for o in read(out)]
    assert sorted(final) == sorted(f"k{i}" for i in range(40)) and done <= set(final)


def test_missing_input_and_unwritable_output(tiny_build, tmp_path, capsys):
    folder = tiny_build("llama-gqa2")
    assert main(["batch", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "o.jsonl"), "--model", str(folder)]) == 2
    assert capsys.readouterr().err.startswith("error: input file not found")
    src = tmp_path / "in.jsonl"
    write_jsonl(src, 1)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["batch", str(src), "-o", str(blocker / "o.jsonl"), "--model", str(folder)]) == 2
    assert capsys.readouterr().err.startswith("error: cannot write")
