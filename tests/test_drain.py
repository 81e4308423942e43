"""server/drain.py: SIGTERM drains a real `llm-runtime serve` process of the default model on loopback. Streams in
flight finish with [DONE], /health says "draining", a new request gets 503 with Retry-After, the process exits 0;
past --shutdown-timeout the streams are cut and it still exits 0; a second signal exits at once (143).

No timing is tight: each wait is for a state (a first token, /health saying draining) with a generous limit, and
the streams are long enough (hundreds of tokens after the first) to be in flight when the signal lands."""
import json
import signal
import threading
import time

import httpx
import pytest
from server_process import launched

from llm_runtime.server.response_store import ResponseStore

STREAMS = 8
LIMIT_S = 300  # for anything the loaded machine may be slow at


@pytest.fixture(scope="module")
def folder(smollm_build):
    return smollm_build("int4")


class Stream(threading.Thread):
    """One streamed chat request read to its end; `started` once its first text arrived."""

    def __init__(self, base: str, max_tokens: int):
        super().__init__(daemon=True)
        self.base, self.max_tokens = base, max_tokens
        self.started = threading.Event()
        self.data: list[str] = []  # the `data:` payloads, [DONE] included
        self.error: BaseException | None = None

    def run(self) -> None:
        body = {"model": "smol", "messages": [{"role": "user", "content": "Tell me a long story."}], "stream": True,
                "max_tokens": self.max_tokens, "ignore_eos": True}
        try:
            with httpx.stream("POST", f"{self.base}/v1/chat/completions", json=body, timeout=LIMIT_S) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        self.data.append(line[6:])
                        if line[6:] != "[DONE]" and text([line[6:]]):
                            self.started.set()
        except httpx.HTTPError as e:  # a stream cut by the server
            self.error = e
        finally:
            self.started.set()



def text(data: list[str]) -> str:
    """The streamed reply's text."""
    return "".join(c["delta"].get("content") or "" for d in data if d != "[DONE]" for c in json.loads(d)["choices"])


def start_streams(base: str, n: int, max_tokens: int) -> list[Stream]:
    streams = [Stream(base, max_tokens) for _ in range(n)]
    for s in streams:
        s.start()
    for s in streams:
        assert s.started.wait(LIMIT_S) and not s.error and s.data
    return streams


def wait_draining(base: str) -> httpx.Response:
    deadline = time.monotonic() + LIMIT_S
    while time.monotonic() < deadline:
        health = httpx.get(f"{base}/health", timeout=LIMIT_S)
        if health.status_code == 503:
            return health
        time.sleep(0.05)
    pytest.fail("/health never said draining")


def test_sigterm_lets_every_stream_finish_and_refuses_new_requests(folder, tmp_path):
    """... and the stored responses are flushed: the write-ahead log moved into the database file."""
    with launched(folder, "--served-model-name", "smol", "--shutdown-timeout", str(LIMIT_S),
                  "--data-dir", str(tmp_path)) as server:
        stored = httpx.post(f"{server.base}/v1/responses", timeout=LIMIT_S,
                            json={"model": "smol", "input": "Hi", "max_output_tokens": 4}).json()
        assert (tmp_path / "responses.sqlite3-wal").stat().st_size > 0
        streams = start_streams(server.base, STREAMS, max_tokens=256)
        server.proc.send_signal(signal.SIGTERM)
        health = wait_draining(server.base)
        assert health.json() == {"status": "draining"}
        new = httpx.post(f"{server.base}/v1/chat/completions", timeout=LIMIT_S,
                         json={"model": "smol", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
        assert new.status_code == 503 and new.headers["retry-after"] == "5"
        assert new.json()["error"]["code"] == "server_shutting_down"
        for s in streams:
            s.join(LIMIT_S)
        assert server.proc.wait(LIMIT_S) == 0
        output = server.output()
    assert f"draining: {STREAMS} requests in flight" in output, output
    for s in streams:
        assert s.error is None and s.data[-1] == "[DONE]"
        assert json.loads(s.data[-2])["choices"][0]["finish_reason"] == "length" and text(s.data)
    assert "Traceback" not in output
    wal = tmp_path / "responses.sqlite3-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    assert ResponseStore(tmp_path / "responses.sqlite3").get("", stored["id"])["output"] == stored["output"]


def test_past_the_shutdown_timeout_streams_are_cut_and_it_still_exits_0(folder):
    with launched(folder, "--served-model-name", "smol", "--shutdown-timeout", "1") as server:
        streams = start_streams(server.base, 2, max_tokens=7000)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(LIMIT_S) == 0
        output = server.output()
    for s in streams:
        s.join(LIMIT_S)
        assert "[DONE]" not in s.data and len(s.data) < 7000
    assert "shutdown timeout: cutting 2 requests still in flight" in output, output


def test_a_second_signal_exits_at_once(folder):
    with launched(folder, "--served-model-name", "smol", "--shutdown-timeout", str(LIMIT_S)) as server:
        streams = start_streams(server.base, 1, max_tokens=7000)
        server.proc.send_signal(signal.SIGTERM)
        wait_draining(server.base)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(LIMIT_S) == 128 + signal.SIGTERM
        output = server.output()
    streams[0].join(LIMIT_S)
    assert "[DONE]" not in streams[0].data
    assert "second signal 15: exiting at once" in output, output
