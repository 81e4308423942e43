"""llm_runtime.ray on a local Ray cluster started here: Ray Data batch output equals the local batch job's
(tiny fp32 model and the default model, 64 requests over 2 replicas), resume after kill -9 of the driver,
Parquet in and out, and Ray Serve: two replicas, 16 concurrent streams through the openai client while one
replica's actor is killed, then 16 more. The base install never imports Ray."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")

from llm_runtime.cli.main import main  # noqa: E402

GREEDY = {"max_tokens": 12, "temperature": 0}


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """One small local cluster for the module; drivers in subprocesses join it by its address. Serve's proxy gets
    30 s to report ready, not 5: on a busy machine its worker process takes longer to start, and a proxy that
    misses the check is killed and restarted until `serve.start` gives up after 60 s (seen at load 4 on 2 cores)."""
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "30")  # inherited by the cluster's processes
    ray.init(num_cpus=2, object_store_memory=96 << 20, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def texts(lines: list[dict]) -> dict:
    """custom_id -> generated text, or the error code."""
    out = {}
    for r in lines:
        if r["error"]:
            out[r["custom_id"]] = ("error", r["error"]["code"])
        else:
            choice = r["response"]["body"]["choices"][0]
            out[r["custom_id"]] = choice["message"]["content"] if "message" in choice else choice["text"]
    return out


def requests(n: int) -> list:
    rows = []
    for i in range(n):
        if i % 2:
            rows.append({"custom_id": f"c{i}", "messages": [{"role": "user", "content": f"Name {i} fruits."}], **GREEDY})
        else:
            rows.append({"custom_id": f"t{i}", "url": "/v1/completions",
                         "body": {"prompt": f"The number {i} is", **GREEDY}})
    return rows + ["{not json", {"custom_id": "bad", "prompt": "x", "temperature": -1}, {"custom_id": "t0", "prompt": "again"}]


def local_and_ray(model: Path, tmp_path: Path, n: int) -> tuple[dict, dict]:
    src = jsonl(tmp_path / "in.jsonl", requests(n))
    assert main(["batch", str(src), "-o", str(tmp_path / "local.jsonl"), "--model", str(model)]) == 0
    assert main(["batch", str(src), "-o", str(tmp_path / "ray.jsonl"), "--model", str(model), "--ray",
                 "--replicas", "2", "--threads-per-replica", "1"]) == 0
    local, on_ray = read(tmp_path / "local.jsonl"), read(tmp_path / "ray.jsonl")
    assert len(on_ray) == len({r["custom_id"] for r in on_ray}) == n + 2  # one line per id, the repeat ignored
    return texts(local), texts(on_ray)


def test_batch_on_ray_equals_the_local_job_tiny(tiny_build, tmp_path, capsys):
    local, on_ray = local_and_ray(tiny_build("llama-gqa2"), tmp_path, 64)
    assert on_ray == local
    assert on_ray["line-65"] == ("error", "invalid_json") and on_ray["bad"] == ("error", "invalid_request")
    summary = capsys.readouterr().err.splitlines()[-1]
    assert "66 requests written (0 already done, 2 errors)" in summary and "tokens/s" in summary


def test_batch_on_ray_equals_the_local_job_default_model(smollm_build, tmp_path):
    """In fp32: int4 kernels round a batch's rows differently from one row's on some CPUs (docs/quantization.md),
    so replicas that batch requests differently could part on near-ties."""
    local, on_ray = local_and_ray(smollm_build("fp32"), tmp_path, 64)
    assert on_ray == local
    assert sum(isinstance(v, str) and len(v) > 0 for v in on_ray.values()) == 64


def test_rerun_skips_what_is_done(tiny_build, tmp_path, capsys):
    model = str(tiny_build("llama-gqa2"))
    src, out = jsonl(tmp_path / "in.jsonl", requests(8)), tmp_path / "out.jsonl"
    assert main(["batch", str(src), "-o", str(out), "--model", model, "--ray"]) == 0
    before = read(out)
    assert main(["batch", str(src), "-o", str(out), "--model", model, "--ray"]) == 0
    assert read(out) == before
    assert "0 requests written (10 already done" in capsys.readouterr().err


def test_resume_after_kill_9_of_the_driver(tiny_build, tmp_path, cluster):
    """A driver in its own process, joined to the cluster, is killed once part of the output is written;
    the rerun (in this process) completes it with exactly one line per id."""
    model = str(tiny_build("llama-gqa2"))
    n = 96
    rows = [{"custom_id": f"r{i}", "prompt": f"story {i}", "max_tokens": 96, "temperature": 0, "ignore_eos": True}
            for i in range(n)]
    src, out = jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "llm_runtime.cli.main", "batch", str(src), "-o", str(out), "--model", model, "--ray",
           "--address", cluster, "--replicas", "2", "--threads-per-replica", "1", "--max-concurrency", "2"]
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and driver.poll() is None and (not out.exists() or len(read(out)) < 4):
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    written = len(read(out))
    assert 4 <= written < n, f"the driver was to be killed midway, it had written {written} of {n}"
    assert main(["batch", str(src), "-o", str(out), "--model", model, "--ray", "--replicas", "2",
                 "--threads-per-replica", "1"]) == 0
    ids = [r["custom_id"] for r in read(out)]
    assert sorted(ids) == sorted(r["custom_id"] for r in rows)  # no loss, no duplicate
    local = tmp_path / "local.jsonl"
    assert main(["batch", str(src), "-o", str(local), "--model", model]) == 0
    assert texts(read(out)) == texts(read(local))


def test_parquet_in_and_out(tiny_build, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    model = str(tiny_build("llama-gqa2"))
    rows = [{"custom_id": f"p{i}", "prompt": f"item {i}", "max_tokens": 6, "temperature": 0.0} for i in range(6)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet")
    jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    assert main(["batch", str(tmp_path / "in.parquet"), "-o", str(out), "--model", model, "--ray"]) == 0
    assert main(["batch", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "local.jsonl"), "--model", model]) == 0
    table = pq.read_table(out).to_pylist()
    assert not (tmp_path / "out.parquet.jsonl").exists()
    lines = [{**r, "response": json.loads(r["response"]), "error": None} for r in table]
    assert texts(lines) == texts(read(tmp_path / "local.jsonl"))


def test_python_entry_returns_a_dataset(tiny_build):
    from llm_runtime import SamplingParams
    from llm_runtime.ray import batch
    from llm_runtime.ray.worker import output_line

    ds = ray.data.from_items([{"custom_id": "a", "prompt": "hello"}, {"custom_id": "b", "prompt": "world"}])
    rows = batch(ds, tiny_build("llama-gqa2"), SamplingParams(max_tokens=5, temperature=0)).take_all()
    lines = {r["custom_id"]: output_line(r) for r in rows}
    assert set(lines) == {"a", "b"}
    assert all(line["response"]["body"]["usage"]["completion_tokens"] == 5 for line in lines.values())


def same(a, b) -> bool:
    """Equal JSON, floats (logprobs) within 1e-4: rows batched differently may round apart in the last bits."""
    if isinstance(a, float) or isinstance(b, float):
        return a == pytest.approx(b, abs=1e-4)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def test_python_entry_with_sampling_params_answers_as_the_local_job(tiny_build, tmp_path):
    """The documented `batch(ds, params=SamplingParams(...))` with logprobs and top_logprobs, special tokens kept,
    a stop string and a JSON schema, on completions and chat rows (plain and OpenAI batch lines): the rows the
    local job gives with the same params. A row's own field wins (its logprobs: false). Every row used to fail
    when the params were turned back into request fields ("Unrecognized request argument supplied")."""
    from llm_runtime import LLM, SamplingParams
    from llm_runtime.batch.job import BatchJob
    from llm_runtime.batch.output import BatchOutput
    from llm_runtime.models.resolver import model_name
    from llm_runtime.ray import batch
    from llm_runtime.ray.worker import output_line

    model = tiny_build("llama-gqa2")
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    params = SamplingParams(max_tokens=10, temperature=0, logprobs=True, top_logprobs=2, skip_special_tokens=False,
                            stop=[":"], json_schema=schema)
    rows = [{"custom_id": "t", "prompt": "The number 7 is"},
            {"custom_id": "c", "messages": [{"role": "user", "content": "Name a fruit."}]},
            {"custom_id": "bt", "url": "/v1/completions", "body": {"prompt": "A story"}},
            {"custom_id": "bc", "url": "/v1/chat/completions",
             "body": {"messages": [{"role": "user", "content": "Hi"}], "logprobs": False}}]
    lines = [(i, json.dumps(r).encode()) for i, r in enumerate(rows, 1)]
    on_ray = batch(ray.data.from_items([{"line": i, "request": raw} for i, raw in lines]), model, params).take_all()
    ray_rows = {r["custom_id"]: output_line(r) for r in on_ray}
    assert {cid: r["error"] for cid, r in ray_rows.items()} == dict.fromkeys(["t", "c", "bt", "bc"], None)
    out = BatchOutput(tmp_path / "local.jsonl")
    BatchJob(LLM(model), lines, out, model_name(model), 16, params=params).run()
    out.close()
    local = {r["custom_id"]: r["response"]["body"] for r in read(tmp_path / "local.jsonl")}
    assert local.keys() == ray_rows.keys()
    for cid, body in local.items():
        got = ray_rows[cid]["response"]["body"]
        assert same({k: got[k] for k in ("model", "choices", "usage")}, {k: body[k] for k in ("model", "choices", "usage")})
        choice = got["choices"][0]
        text = choice["message"]["content"] if "message" in choice else choice["text"]
        assert text.startswith("{") and ":" not in text and choice["finish_reason"] == "stop"  # schema, then stop
    assert len(ray_rows["t"]["response"]["body"]["choices"][0]["logprobs"]["top_logprobs"][0]) == 2
    assert len(ray_rows["c"]["response"]["body"]["choices"][0]["logprobs"]["content"][0]["top_logprobs"]) == 2
    assert ray_rows["bc"]["response"]["body"]["choices"][0]["logprobs"] is None


def test_without_ray_the_flag_says_how_to_install(tmp_path):
    code = ("import sys; sys.modules['ray'] = None; from llm_runtime.cli.main import main; "
            f"sys.exit(main(['batch', {str(tmp_path)!r}, '-o', 'x.jsonl', '--ray']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2 and "pip install 'llm-runtime[ray]'" in r.stderr and "Traceback" not in r.stderr


def test_the_base_install_never_imports_ray():
    code = ("import sys, llm_runtime, llm_runtime.cli.main, llm_runtime.server.app, llm_runtime.batch.job; "
            "from llm_runtime.cli.main import parser; parser(); assert 'ray' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def replica_actors() -> list[dict]:
    return [a for a in ray.util.list_named_actors(all_namespaces=True) if "SERVE_REPLICA" in a["name"]]


def test_serve_two_replicas_stream_through_a_killed_replica(tiny_build):
    """16 concurrent streams over two replicas; one replica's actor is killed once streams are under way:
    every stream completes or raises a clean error in the client; Serve restarts the replica; 16 more succeed."""
    import httpx
    from openai import OpenAI
    from ray import serve

    from llm_runtime.engine import EngineConfig
    from llm_runtime.llm_config import LLMConfig
    from llm_runtime.server.ray_serve import DEPLOYMENT, application

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    config = LLMConfig.of(tiny_build("llama-gqa2"), threads=1, engine=EngineConfig(max_concurrency=8))
    serve.run(application(config, "tiny", replicas=2), name=DEPLOYMENT, route_prefix="/")
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=120)
        started = threading.Semaphore(0)

        def stream(i: int, results: dict) -> None:
            try:
                text, finish = "", None
                for chunk in client.chat.completions.create(
                        model="tiny", messages=[{"role": "user", "content": f"story {i}"}], max_tokens=96,
                        temperature=0, stream=True, extra_body={"ignore_eos": True}):
                    if chunk.choices:
                        if not text:
                            started.release()
                        text += chunk.choices[0].delta.content or ""
                        finish = chunk.choices[0].finish_reason or finish
                results[i] = ("complete", finish)
            except Exception as e:  # the client's own error type: the clean end of a stream cut short
                results[i] = ("error", e)

        def load(kill: bool) -> dict:
            results: dict = {}
            threads = [threading.Thread(target=stream, args=(i, results)) for i in range(16)]
            for t in threads:
                t.start()
            if kill:
                for _ in range(4):
                    assert started.acquire(timeout=120)
                victim = replica_actors()[0]
                ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
            for t in threads:
                t.join(timeout=300)
            assert len(results) == 16
            return results

        first = load(kill=True)
        for state, detail in first.values():
            assert (state, detail) == ("complete", "length") or (state == "error" and str(detail)), first
        states = [state for state, _ in first.values()]
        assert "complete" in states and "error" in states, first  # the kill cut some streams, not the others
        second = load(kill=False)
        assert all(v == ("complete", "length") for v in second.values()), second
        deadline = time.time() + 120
        while time.time() < deadline and serve.status().applications[DEPLOYMENT].deployments[
                DEPLOYMENT].replica_states.get("RUNNING", 0) < 2:
            time.sleep(0.5)
        assert serve.status().applications[DEPLOYMENT].deployments[DEPLOYMENT].replica_states.get("RUNNING") == 2
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert "llm_requests_total" in metrics and "llm_generation_tokens_total" in metrics
    finally:
        serve.shutdown()


def test_batch_on_ray_with_adapters_equals_the_local_job(tiny_build, tiny_hf, tmp_path):
    """Each actor loads the --lora adapters (by path, through the LLMConfig): a line's model picks one."""
    from peft_adapters import save_peft

    from llm_runtime.model_builder.contract import LORA_TARGETS

    model = str(tiny_build("llama-gqa2", lora_targets=LORA_TARGETS))
    adapter = save_peft(tiny_hf("llama-gqa2"), tmp_path / "attn", seed=1, r=4, lora_alpha=8,
                        target_modules=["q_proj", "v_proj"])
    rows = [{"custom_id": f"{i}", "prompt": f"The number {i // 2} is", **GREEDY,
             **({"model": "attn"} if i % 2 else {})} for i in range(8)]  # pairs of one prompt: base, then adapter
    src = jsonl(tmp_path / "in.jsonl", rows)
    on_ray = ["--ray", "--replicas", "2", "--threads-per-replica", "1"]
    for out, ray_flags in (("local.jsonl", []), ("ray.jsonl", on_ray)):
        assert main(["batch", str(src), "-o", str(tmp_path / out), "--model", model, "--lora", f"attn={adapter}",
                     *ray_flags]) == 0
    local, on_ray = texts(read(tmp_path / "local.jsonl")), texts(read(tmp_path / "ray.jsonl"))
    assert on_ray == local and all(local[f"{2 * k}"] != local[f"{2 * k + 1}"] for k in range(4))
    assert {r["response"]["body"]["model"] for r in read(tmp_path / "ray.jsonl") if int(r["custom_id"]) % 2} == {"attn"}
