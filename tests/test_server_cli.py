"""`llm-runtime serve` as a person meets it (server/cli.py): its --help, and what it logs by default."""
import re

import httpx
import pytest
from server_process import serving

from llm_runtime.cli.main import main

ACCESS = r'INFO llm_runtime\.server\.access: 127\.0\.0\.1:\d+ - "{} HTTP/1\.1" {} \d+ ms'


def test_serve_help_names_every_endpoint_and_the_defaults(capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the options' help
    for endpoint in ("POST /v1/chat/completions", "POST /v1/completions", "POST /v1/responses", "GET /v1/models",
                     "GET / ", "GET /metrics", "GET /health"):
        assert endpoint in text
    for default in ("--port PORT port to listen on (default: 8000)", "(default: 127.0.0.1",
                    "each in its own cache slot (default: 16)", "(the server answers 429) (default: 1024)", "replicas (default: 1)"):
        assert default in text
    assert "--no-access-log" in text


def test_the_server_logs_its_urls_and_a_line_per_request(tiny_build):
    """By default (no -v): the API's and the chat page's URLs at start, then one access line per request, with
    its status and time, refusals included."""
    logs: list[str] = []
    with serving(tiny_build("llama-gqa2"), "--served-model-name", "tiny", logs=logs) as base:
        assert httpx.get(f"{base}/v1/models").status_code == 200
        body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        assert httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60).status_code == 200
        assert httpx.get(f"{base}/nowhere?x=1").status_code == 404
    text = logs[0]
    assert f"INFO llm_runtime.server.cli: serving tiny: the API at {base}/v1\n" in text
    assert f"INFO llm_runtime.server.cli: the chat page at {base}/\n" in text
    assert len(re.findall(ACCESS.format("GET /v1/models", 200), text)) == 1
    assert len(re.findall(ACCESS.format("POST /v1/chat/completions", 200), text)) == 1
    assert len(re.findall(ACCESS.format(r"GET /nowhere\?x=1", 404), text)) == 1
    assert re.search(ACCESS.format("GET /health", 200), text)  # the fixture's readiness polls


def test_no_access_log_keeps_the_start_lines_only(tiny_build):
    logs: list[str] = []
    with serving(tiny_build("llama-gqa2"), "--no-access-log", "--no-web-ui", logs=logs) as base:
        assert httpx.get(f"{base}/v1/models").status_code == 200
    text = logs[0]
    assert f"the API at {base}/v1" in text and "chat page" not in text
    assert " HTTP/1.1" not in text and "llm_runtime.server.access" not in text
