"""server/response_sweeper.py: the sweep runs on a thread of its own. While it waits for a write lock that this
test holds on the store's file, a real server process answers requests; once the lock is let go, the sweep
deletes the expired rows."""
import sqlite3
import time

import httpx
from server_process import launched

from llm_runtime.server.response_store import ResponseStore

LIMIT_S = 300


def test_requests_are_answered_while_a_sweep_waits(tiny_build, tmp_path):
    store = ResponseStore(tmp_path / "responses.sqlite3")
    for k in range(50):
        store.put("", {"id": f"resp_{k}", "created_at": int(time.time()) - 7200}, [])
    lock = sqlite3.connect(store.path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # the write lock: the sweep's DELETE waits for it (WAL readers do not)
    try:
        with launched(tiny_build("llama-gqa2"), "--data-dir", str(tmp_path), "--responses-ttl", "1h",
                      "--served-model-name", "tiny") as server:
            assert httpx.get(f"{server.base}/v1/models", timeout=LIMIT_S).status_code == 200
            body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
            assert httpx.post(f"{server.base}/v1/chat/completions", json=body, timeout=LIMIT_S).status_code == 200
            # answered while the start's sweep is still waiting: it has neither deleted nor given up
            assert lock.execute("SELECT count(*) FROM responses").fetchone()[0] == 50
            assert "sweeping the stored responses failed" not in server.output()
            lock.execute("COMMIT")
            deadline = time.monotonic() + LIMIT_S
            while lock.execute("SELECT count(*) FROM responses").fetchone()[0] and time.monotonic() < deadline:
                time.sleep(0.1)
            assert lock.execute("SELECT count(*) FROM responses").fetchone()[0] == 0
    finally:
        lock.close()
