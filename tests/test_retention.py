"""server/retention.py over real HTTP on loopback (a `llm-runtime serve` process, the official openai client):
--responses-ttl forgets a response once it is that old, DELETE /v1/responses purges the caller's key and leaves
another key's, bad flag values are refused."""
import time

import httpx
import openai
import pytest
from server_process import serving

from llm_runtime.cli.main import main

KEYS = ("retention-key-a", "retention-key-b")
ASK = {"model": "tiny", "input": "Hi", "max_output_tokens": 2}
LIMIT_S = 120


def client_for(base: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def folder(tiny_build):
    return tiny_build("llama-gqa2")


def test_a_response_is_gone_once_past_its_time_to_live(folder):
    with serving(folder, "--served-model-name", "tiny", "--responses-ttl", "10s") as base:
        client = client_for(base, "none")
        response = client.responses.create(**ASK)
        deadline = time.monotonic() + LIMIT_S
        while time.monotonic() < deadline:
            try:
                client.responses.retrieve(response.id)
            except openai.NotFoundError:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the response outlived its time to live")
        assert time.time() - response.created_at >= 10
        with pytest.raises(openai.BadRequestError, match="not found"):
            client.responses.create(**{**ASK, "previous_response_id": response.id})


def test_purge_forgets_the_callers_responses_only(folder):
    with serving(folder, "--served-model-name", "tiny", "--api-key", KEYS[0], "--api-key", KEYS[1]) as base:
        a, b = client_for(base, KEYS[0]), client_for(base, KEYS[1])
        mine = [a.responses.create(**ASK).id for _ in range(2)]
        theirs = b.responses.create(**ASK).id
        purge = httpx.delete(f"{base}/v1/responses", headers={"Authorization": f"Bearer {KEYS[0]}"})
        assert purge.status_code == 200 and purge.json() == {"object": "response.purge", "deleted": 2}
        for response_id in mine:
            with pytest.raises(openai.NotFoundError):
                a.responses.retrieve(response_id)
        assert b.responses.retrieve(theirs).id == theirs
        assert httpx.delete(f"{base}/v1/responses").status_code == 401
        assert httpx.delete(f"{base}/v1/responses", headers={"Authorization": f"Bearer {KEYS[0]}"}).json() == {
            "object": "response.purge", "deleted": 0}


@pytest.mark.parametrize("flag", [("--responses-ttl", "3w"), ("--responses-ttl", "0"), ("--responses-max-mb", "0"),
                                  ("--responses-max-mb", "lots")])
def test_bad_values_are_refused(flag, capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", *flag])
    assert e.value.code == 2 and f"argument {flag[0]}" in capsys.readouterr().err
