"""The server fuzzed over its own OpenAPI document (schemathesis): a real `llm-runtime serve` process on loopback
with a tiny model gets schema-valid and schema-violating requests on every operation, answers none of them with a
5xx, answers every error in OpenAI's shape, and serves normally afterwards."""
import json
import os
from pathlib import Path

import httpx
import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from server_process import serving

KEY = "fuzz-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SERVED = "tiny"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))  # per operation with a body, per mode; a fifth for the others
# fuzzing may ask for the context's whole length; the test, not the server, keeps generations short (each cap is
# within the document's bounds, so a schema-violating body stays one)
TOKEN_CAPS = {"max_tokens": 4, "max_completion_tokens": 4, "max_output_tokens": 4, "min_tokens": 4}
OPENAI_SPEC = json.loads((Path(__file__).parent / "fixtures" / "openai_openapi" / "responses.json").read_text())
ERROR_RESPONSE = jsonschema.Draft202012Validator({**OPENAI_SPEC, "$ref": "#/components/schemas/ErrorResponse"})


@pytest.fixture(scope="module")
def server(tiny_build):
    with serving(tiny_build("llama-gqa2"), "--api-key", KEY, "--served-model-name", SERVED,
                 "--max-concurrency", "4", "--no-web-ui") as base:
        yield base


def declared_fields(spec: dict) -> dict[str, set[str]]:
    """path -> the top-level fields its JSON body declares in the OpenAPI document."""
    fields = {}
    for path, operations in spec["paths"].items():
        for op in operations.values():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if "$ref" in body:
                fields[path] = set(spec["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]["properties"])
    return fields


def bounded(declared: dict[str, set[str]]):
    """A map_body hook that lets generated bodies reach generation: the model is the served one (else nearly every
    request is a 404), generation is short, a chat message with neither content nor tool calls gets some text, and
    top-level fields the document does not declare are dropped (its bodies allow any: the server refuses an unknown
    one by name, 400 unknown_parameter, tested in test_server.py). Kept, each of those would end nearly every body
    at the same 4xx."""

    def hook(ctx, body):
        if isinstance(body, dict):
            known = declared.get(ctx.operation.path, body.keys())
            body = {k: v for k, v in body.items() if k in known}
            if isinstance(body.get("model"), str) and len(body["model"]) <= 256:  # longer: a negated body's
                body["model"] = SERVED
            for name, cap in TOKEN_CAPS.items():
                if type(body.get(name)) is int and body[name] > cap:
                    body[name] = cap
            for message in body.get("messages") if isinstance(body.get("messages"), list) else ():
                if isinstance(message, dict) and message.get("content") is None and not message.get("tool_calls"):
                    message["content"] = "Hi"
        return body

    return hook


@pytest.fixture(scope="module")
def api(server):
    spec = httpx.get(f"{server}/openapi.json").json()
    schema = schemathesis.openapi.from_dict(spec)
    schema.config.update(base_url=server)
    schema.hook("map_body")(bounded(declared_fields(spec)))
    return schema


def answered_well(case) -> None:
    # the document is a first check only: a schema-valid body may still be refused (a tool message without content)
    response = case.call_and_validate(headers=AUTH, timeout=60,
                                      excluded_checks=[schemathesis.checks.positive_data_acceptance])
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        ERROR_RESPONSE.validate(response.json())


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_fuzzed_requests_get_no_5xx_and_openai_shaped_errors(api, mode):
    for operation in (result.ok() for result in api.get_all_operations()):
        if mode is GenerationMode.NEGATIVE and not (len(operation.body) or len(operation.query)):
            continue  # nothing can be wrong: no input, or only path parameters (any string)
        examples = EXAMPLES if len(operation.body) else EXAMPLES // 5
        run = settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                       suppress_health_check=list(HealthCheck))(given(operation.as_strategy(mode))(answered_well))
        run()


def test_server_is_healthy_after_fuzzing(server):
    assert httpx.get(f"{server}/health").status_code == 200
    r = httpx.post(f"{server}/v1/chat/completions", headers=AUTH, timeout=60, json={
        "model": SERVED, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant"
